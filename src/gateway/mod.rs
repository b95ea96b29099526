//! The request lifecycle, as named phases:
//!
//! 1. [`authenticate`]: the client from `Authorization: Bearer` or `x-api-key`.
//! 2. [`parse`]: endpoint from method and path; `model`, `stream` and required fields from the body.
//! 3. [`route`]: the route for the model (and headers), the client's permission, the backend plan.
//! 4. [`admit::admit`]: rate limits and quotas, charged all or nothing (settled after the response).
//! 5. [`prepare`]: the upstream request body for one backend: passthrough (model rename only) or a
//!    translation between the client's schema and the backend's.
//! 6. [`send`]: the upstream request, trying the plan's backends in order; falling back only on
//!    failures that happen before any byte reaches the client.
//! 7. [`relay`]: the upstream response to the client, streamed event by event or whole, translated
//!    back into the client's schema where the schemas differ; it reports the usage it saw.
//! 8. record: the admission is settled with that usage and the usage is counted in [`metrics`].
//!
//! Each phase is a function; the order lives in [`serve`].

pub mod admit;
mod relay;

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::api::{Api, Endpoint};
use crate::error::GatewayError;
use crate::metrics;
use crate::providers::{mock, Framing, Outgoing};
use crate::router::{random_draw, Target};
use crate::server::{Request, Responder};
use crate::snapshot::{Backend, Client, Snapshot};
use crate::translate::{Pair, RequestOptions, ResponseOptions};
use crate::upstream::{Cancel, UpstreamError};

pub use relay::{relay, Outcome};

/// Serves one request end to end.
pub fn handle(req: &Request, resp: &mut Responder) {
    let snapshot = crate::snapshot::current();
    let request_id = crate::server::request_id(Some(&req.head));
    let ids: [(&str, &str); 1] = [("x-request-id", &request_id)];
    let client_api = crate::server::api_for_path(req.head.path());
    if let Err(e) = serve(&snapshot, req, resp, &ids) {
        if !resp.started() {
            let _ = send_error(resp, client_api, &e, &ids);
        }
    }
}

fn serve(snapshot: &Snapshot, req: &Request, resp: &mut Responder, ids: &[(&str, &str)]) -> Result<(), GatewayError> {
    match parse_operation(req)? {
        Operation::Health => {
            let _ = resp.send(200, &[("content-type", "application/json"), ids[0]], br#"{"status":"ok"}"#);
            Ok(())
        }
        Operation::Metrics => {
            let body = metrics::render();
            let _ = resp.send(200, &[("content-type", "text/plain; version=0.0.4"), ids[0]], body.as_bytes());
            Ok(())
        }
        Operation::Models => {
            let client = authenticate(snapshot, req)?;
            let anthropic_shape =
                req.head.header("anthropic-version").is_some() || req.head.path().starts_with("/anthropic/");
            let body = list_models(snapshot, client, anthropic_shape);
            let _ = resp.send(200, &[("content-type", "application/json"), ids[0]], &body);
            Ok(())
        }
        Operation::Proxy(endpoint) => {
            // Authenticate first: an unauthenticated caller learns nothing about its body.
            let client = authenticate(snapshot, req)?;
            let peek = parse(endpoint, &req.body)?;
            let (route_label, plan) = route(snapshot, req, client, &peek.model)?;
            let client_name = client.map_or("anonymous", |c| c.name.as_str());
            let header = |name: &str| req.head.header(name);
            let first = &snapshot.backends[plan[0].backend];
            // Counting tokens is free upstream: it is not charged against limits.
            let admission = if endpoint == Endpoint::CountTokens {
                admit::Admission::none(snapshot)
            } else {
                admit::admit(
                    snapshot,
                    &crate::ratelimit::Facts {
                        client: client_name,
                        model: &peek.model,
                        backend: &first.name,
                        header: &header,
                        est_input: crate::ratelimit::estimate_input_tokens(req.body.len()),
                        max_output: admit::output_reservation(snapshot, reserved_output(endpoint, &peek, first)),
                    },
                )?
            };
            let mut headers: Vec<(&str, &str)> = ids.to_vec();
            headers.extend(admission.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let cancel = resp.watch_client();
            match send(snapshot, req, endpoint, &peek, &plan, &cancel) {
                Ok(Some(exchange)) => {
                    let backend = exchange.backend;
                    let provider = &*snapshot.backends[backend].provider;
                    let outcome = relay(exchange, provider, endpoint.client_api(), &peek.model, resp, &headers);
                    admission.settle(outcome.usage.as_ref(), outcome.estimated_output);
                    let estimated = crate::ratelimit::estimate_input_tokens(req.body.len()) + outcome.estimated_output;
                    // Metrics are labelled by the route's pattern: a bounded set, whatever clients send.
                    metrics::record(
                        client_name,
                        route_label,
                        &snapshot.backends[backend].name,
                        outcome.usage.as_ref(),
                        estimated,
                    );
                    Ok(())
                }
                // The client went away after the request may have reached the upstream, which may
                // have generated everything it was allowed to: keep the reservation.
                Ok(None) => {
                    admission.settle_as_reserved();
                    Ok(())
                }
                Err(e) => {
                    let _ = send_error(resp, endpoint.client_api(), &e, &headers);
                    Ok(())
                }
            }
        }
    }
}

/// The output tokens a request may generate, as the backend will see it: the larger of the client's
/// limits (a translator may use either), the backend's default where Anthropic requires one, plus a
/// thinking budget the translation adds. `None`: unknown (the limiter's default applies).
fn reserved_output(endpoint: Endpoint, peek: &RequestPeek, backend: &Backend) -> Option<u64> {
    if endpoint == Endpoint::Embeddings {
        return Some(0);
    }
    let upstream = backend.provider.api();
    // Translating `reasoning_effort` to a thinking budget adds that budget to the output.
    let translated = endpoint == Endpoint::ChatCompletions && upstream != Api::OpenAi;
    let thinking = match peek.reasoning_effort.as_deref() {
        Some("low") if translated => 1024,
        Some("medium") if translated => 4096,
        Some("high") if translated => 16384,
        _ => 0,
    };
    let to_anthropic = endpoint == Endpoint::ChatCompletions && upstream == Api::Anthropic;
    match peek.max_output {
        Some(n) => Some(n.saturating_add(thinking)),
        None if to_anthropic => Some(u64::from(backend.default_max_tokens).saturating_add(thinking)),
        None => None,
    }
}

enum Operation {
    Health,
    Metrics,
    Models,
    Proxy(Endpoint),
}

fn parse_operation(req: &Request) -> Result<Operation, GatewayError> {
    let method = req.head.method();
    let path = req.head.path();
    let path = path.strip_prefix("/anthropic").filter(|p| p.starts_with("/v1/")).unwrap_or(path);
    let (op, allow) = match path {
        "/health" | "/healthz" => (Operation::Health, "GET, HEAD"),
        "/metrics" => (Operation::Metrics, "GET"),
        "/v1/models" => (Operation::Models, "GET, HEAD"),
        "/v1/chat/completions" => (Operation::Proxy(Endpoint::ChatCompletions), "POST"),
        "/v1/completions" => (Operation::Proxy(Endpoint::Completions), "POST"),
        "/v1/embeddings" => (Operation::Proxy(Endpoint::Embeddings), "POST"),
        "/v1/messages" => (Operation::Proxy(Endpoint::Messages), "POST"),
        "/v1/messages/count_tokens" => (Operation::Proxy(Endpoint::CountTokens), "POST"),
        _ => return Err(GatewayError::NotFound),
    };
    if allow.split(", ").any(|m| m == method) {
        Ok(op)
    } else {
        Err(GatewayError::MethodNotAllowed { allow })
    }
}

/// What the gateway reads from a request body; everything else passes through untouched.
#[derive(Debug)]
pub struct RequestPeek {
    pub model: String,
    pub stream: bool,
    /// The larger of `max_completion_tokens` and `max_tokens`, when either is set.
    pub max_output: Option<u64>,
    pub reasoning_effort: Option<String>,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct PeekFields<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    messages: Option<serde::de::IgnoredAny>,
    prompt: Option<serde::de::IgnoredAny>,
    input: Option<serde::de::IgnoredAny>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream_options: Option<StreamOptionsPeek>,
    reasoning_effort: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptionsPeek {
    include_usage: Option<bool>,
}

/// Phase 1: validates the body as JSON and reads `model` and `stream` without building a tree.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<RequestPeek, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::BadRequest("the request body is empty: a JSON object is required".into()));
    }
    let fields: PeekFields =
        serde_json::from_slice(body).map_err(|e| GatewayError::BadRequest(format!("invalid JSON body: {e}")))?;
    let present = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => fields.messages.is_some(),
        Endpoint::Completions => fields.prompt.is_some(),
        Endpoint::Embeddings => fields.input.is_some(),
    };
    let model = match fields.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(GatewayError::BadRequest("missing required parameter: 'model'".into())),
    };
    if !present {
        return Err(GatewayError::BadRequest(format!("missing required parameter: '{}'", endpoint.required_field())));
    }
    Ok(RequestPeek {
        model,
        stream: fields.stream.unwrap_or(false),
        max_output: match (fields.max_completion_tokens, fields.max_tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
        reasoning_effort: fields.reasoning_effort,
        include_usage: fields.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
    })
}

/// Phase 2: the client whose key the request carries. With no clients configured the gateway is open.
pub fn authenticate<'s>(snapshot: &'s Snapshot, req: &Request) -> Result<Option<&'s Client>, GatewayError> {
    if snapshot.clients.is_empty() {
        return Ok(None);
    }
    let key = req
        .head
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| req.head.header("x-api-key"))
        .map(str::trim)
        .ok_or(GatewayError::Unauthorized)?;
    // Compare against every client without stopping early, in constant time per key.
    let mut found = None;
    for client in &snapshot.clients {
        if constant_time_eq(client.key.0.as_bytes(), key.as_bytes()) {
            found = Some(client);
        }
    }
    found.map(Some).ok_or(GatewayError::Unauthorized)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// Phase 3: the route's label (its model pattern) and the ordered backends to try.
pub fn route<'s>(
    snapshot: &'s Snapshot,
    req: &Request,
    client: Option<&Client>,
    model: &str,
) -> Result<(&'s str, Vec<&'s Target>), GatewayError> {
    if let Some(c) = client {
        if !c.may_use(model) {
            return Err(GatewayError::ModelNotAllowed(model.to_string()));
        }
    }
    let route = snapshot
        .router
        .find(model, |name| req.head.header(name))
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_string()))?;
    Ok((route.model.label(), route.plan(random_draw())))
}

/// The upstream request for one backend.
pub struct Prepared<'a> {
    /// The path below the backend's base URL.
    pub path: String,
    /// The operation in the upstream's family.
    pub endpoint: Endpoint,
    pub body: Cow<'a, [u8]>,
    /// The translator back to the client's API (`None`: same API, relayed as it comes).
    pub pair: Option<Pair>,
    pub response: ResponseOptions,
    /// The gateway asked the upstream for stream usage the client did not ask for: hide that chunk.
    pub strip_usage: bool,
}

/// Phase 4: the request to send to `backend`: its path, and the body renamed or translated.
pub fn prepare<'a>(
    endpoint: Endpoint,
    backend: &Backend,
    req: &'a Request,
    peek: &RequestPeek,
    model: &str,
) -> Result<Prepared<'a>, GatewayError> {
    let provider = &*backend.provider;
    let unsupported = || {
        GatewayError::BadRequest(format!(
            "{} is not supported by backend \"{}\" (schema {})",
            endpoint.path(),
            backend.name,
            provider.schema()
        ))
    };
    let upstream_endpoint = endpoint.in_family(provider.api()).ok_or_else(unsupported)?;
    let path = provider.path(upstream_endpoint, model, peek.stream).ok_or_else(unsupported)?;
    let invalid = |e: serde_json::Error| GatewayError::BadRequest(format!("invalid JSON body: {e}"));
    let created = crate::clock::unix_secs();
    let (body, pair, response, strip_usage) = if endpoint.client_api() == provider.api() {
        let mut body = if provider.model_in_body() {
            crate::json::with_model(&req.body, &peek.model, model).map_err(invalid)?
        } else {
            Cow::Borrowed(&req.body[..])
        };
        // Usage is needed for accounting and limits: ask OpenAI-compatible streams for it.
        let strip_usage = peek.stream
            && !peek.include_usage
            && provider.stream_usage()
            && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        if strip_usage {
            body = Cow::Owned(crate::json::with_stream_usage(&body).map_err(invalid)?);
        }
        (body, None, ResponseOptions { created, ..ResponseOptions::default() }, strip_usage)
    } else {
        let pair = Pair::between(endpoint.client_api(), provider.api()).ok_or_else(unsupported)?;
        let options = RequestOptions { model: Some(model.to_string()), default_max_tokens: backend.default_max_tokens };
        let t = pair.request(&req.body, &options, created).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        if !t.dropped.is_empty() {
            crate::debug!("dropped for backend \"{}\": {}", backend.name, t.dropped.join(", "));
        }
        // A token count answers in the client's shape (the provider makes it so): nothing to translate back.
        let pair = (endpoint != Endpoint::CountTokens).then_some(pair);
        (Cow::Owned(t.body), pair, t.response, false)
    };
    let body = provider.finish_body(upstream_endpoint, body, &|name| req.head.header(name))?;
    Ok(Prepared { path, endpoint: upstream_endpoint, body, pair, response, strip_usage })
}

/// An upstream response whose head arrived; its body is still to be read.
pub struct Exchange {
    pub status: u16,
    pub content_type: Option<String>,
    /// Response headers relayed to the client.
    pub passthrough: Vec<(String, String)>,
    /// The upstream's error type header (`x-amzn-ErrorType`), for providers whose errors carry it.
    pub error_type: Option<String>,
    pub body: Box<dyn Read>,
    /// The operation in the upstream's family.
    pub endpoint: Endpoint,
    pub pair: Option<Pair>,
    pub response: ResponseOptions,
    /// The family of the upstream's bytes and how its streams are framed.
    pub api: Api,
    pub framing: Framing,
    pub strip_usage: bool,
    /// Index of the backend that answered.
    pub backend: usize,
}

/// Request headers that are never forwarded: hop-by-hop, framing, and the client's own credentials.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "api-key",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept-encoding",
    "cookie",
    "x-request-id",
    "x-goog-api-key",
    // The operator's provider account is not the client's to choose.
    "openai-organization",
    "openai-project",
];

/// Upstream response headers relayed to the client.
fn relayed_response_header(name: &str) -> bool {
    name.starts_with("x-ratelimit-")
        || name == "openai-processing-ms"
        || name == "openai-version"
        || name.starts_with("anthropic-ratelimit-")
        || name == "retry-after"
        || name == "request-id"
}

/// Phase 5: sends to each backend of the plan in turn until one answers. `None`: the client went away.
fn send(
    snapshot: &Snapshot,
    req: &Request,
    endpoint: Endpoint,
    peek: &RequestPeek,
    plan: &[&Target],
    cancel: &Arc<Cancel>,
) -> Result<Option<Exchange>, GatewayError> {
    let mut last_error = None;
    for (i, target) in plan.iter().enumerate() {
        let last = i + 1 == plan.len();
        let backend = &snapshot.backends[target.backend];
        let model = target.model.as_deref().unwrap_or(&peek.model);
        let prepared = match prepare(endpoint, backend, req, peek, model) {
            Ok(p) => p,
            // This backend cannot take the request; another one of the route may.
            Err(e) if !last => {
                crate::debug!("backend \"{}\" skipped: {e}", backend.name);
                last_error = Some(e);
                continue;
            }
            Err(e) => return Err(last_error.filter(|_| i > 0).unwrap_or(e)),
        };
        let result = match backend.provider.mock() {
            Some(mock) => Ok(send_mock(mock, target.backend, prepared, model)?),
            None => send_http(backend, target.backend, req, prepared),
        };
        if cancel.is_cancelled() {
            return Ok(None);
        }
        match result {
            Ok(up) if (up.status == 429 || up.status >= 500) && !last => {
                crate::warn_throttled!("backend \"{}\" answered {}; falling back", backend.name, up.status);
            }
            Ok(up) => return Ok(Some(up)),
            Err(e) if e.may_fall_back() && !last => {
                crate::warn_throttled!("backend \"{}\" failed: {e}; falling back", backend.name);
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| GatewayError::UpstreamUnreachable("no backend could be reached".into())))
}

fn send_mock(mock: &mock::Mock, index: usize, prepared: Prepared, model: &str) -> Result<Exchange, GatewayError> {
    let body: Value = serde_json::from_slice(&prepared.body)
        .map_err(|e| GatewayError::BadRequest(format!("invalid JSON body: {e}")))?;
    let reply = mock::respond(prepared.endpoint, &body, model);
    Ok(Exchange {
        status: reply.status,
        content_type: Some(reply.content_type.to_string()),
        passthrough: Vec::new(),
        error_type: None,
        body: Box::new(mock::MockBody::new(reply.chunks, mock.chunk_delay)),
        endpoint: prepared.endpoint,
        pair: prepared.pair,
        response: prepared.response,
        api: Api::OpenAi,
        framing: Framing::Sse,
        strip_usage: prepared.strip_usage,
        backend: index,
    })
}

fn send_http(backend: &Backend, index: usize, req: &Request, prepared: Prepared) -> Result<Exchange, GatewayError> {
    let provider = &*backend.provider;
    let client = backend
        .upstream
        .as_ref()
        .ok_or_else(|| GatewayError::BackendUnavailable(format!("backend \"{}\" is not ready", backend.name)))?;
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(24);
    let default_header = provider.default_header();
    let mut has_default = false;
    let connection_tokens = req.head.header("connection").unwrap_or("");
    for (name, value) in req.head.headers() {
        let named = |n: &str| n.eq_ignore_ascii_case(name);
        if NOT_FORWARDED.iter().any(|n| named(n))
            || name.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
            // Headers the operator sets: the client can neither override nor duplicate them.
            || provider.owns_header(name)
            || backend.headers.iter().any(|(n, _)| named(n))
            // Hop-by-hop headers the client listed in `Connection`.
            || connection_tokens.split(',').any(|t| named(t.trim()))
        {
            continue;
        }
        has_default |= default_header.is_some_and(|(n, _)| named(n));
        // httparse admitted only visible ASCII and tabs in values: safe to write upstream as they are.
        if let Ok(v) = std::str::from_utf8(value) {
            headers.push((name, v));
        }
    }
    if let Some(header) = default_header.filter(|_| !has_default) {
        headers.push(header);
    }
    headers.extend(backend.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let content_type = match req.head.header("content-type") {
        Some(c) => c,
        None => {
            headers.push(("content-type", "application/json"));
            "application/json"
        }
    };
    let full_path = format!("{}{}", client.base_path(), prepared.path);
    let outgoing = Outgoing {
        authority: client.authority(),
        path: &full_path,
        query: client.query(),
        content_type,
        body: &prepared.body,
    };
    let mut credentials = Vec::new();
    provider.authorize(&outgoing, crate::clock::unix_secs(), &mut credentials).map_err(|missing| {
        GatewayError::BackendUnavailable(format!("backend \"{}\" has no credential: {missing}", backend.name))
    })?;
    headers.extend(credentials.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let response = client.send(&prepared.path, &headers, &prepared.body).map_err(|e| match e {
        UpstreamError::Timeout(m) => GatewayError::UpstreamTimeout(format!("backend \"{}\": {m}", backend.name)),
        UpstreamError::Unreachable(m) => {
            GatewayError::UpstreamUnreachable(format!("backend \"{}\" unreachable: {m}", backend.name))
        }
    })?;
    let mut content_type = None;
    let mut error_type = None;
    let mut passthrough = Vec::new();
    for (name, value) in response.headers {
        if name == "content-type" {
            content_type = Some(value);
        } else if name == "x-amzn-errortype" {
            error_type = Some(value);
        } else if relayed_response_header(&name) {
            passthrough.push((name, value));
        }
    }
    Ok(Exchange {
        status: response.status,
        content_type,
        passthrough,
        error_type,
        body: Box::new(response.body),
        endpoint: prepared.endpoint,
        pair: prepared.pair,
        response: prepared.response,
        api: provider.api(),
        framing: provider.framing(),
        strip_usage: prepared.strip_usage,
        backend: index,
    })
}

pub(crate) fn send_error(
    resp: &mut Responder,
    client: Api,
    e: &GatewayError,
    ids: &[(&str, &str)],
) -> std::io::Result<()> {
    let own = e.headers();
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    headers.extend(ids.iter().filter(|(n, _)| !own.iter().any(|(o, _)| o == n)));
    headers.extend(own.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    resp.send(e.status(), &headers, &e.body(client))
}

fn list_models(snapshot: &Snapshot, client: Option<&Client>, anthropic: bool) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    for route in &snapshot.router.routes {
        if let Some(name) = route.model.exact_name() {
            if client.is_none_or(|c| c.may_use(name)) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let value = if anthropic {
        let data: Vec<Value> = names
            .iter()
            .map(|n| serde_json::json!({"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        serde_json::json!({"data": data, "has_more": false, "first_id": names.first(), "last_id": names.last()})
    } else {
        let data: Vec<Value> = names
            .iter()
            .map(|n| serde_json::json!({"id": n, "object": "model", "created": 0, "owned_by": "switchyard"}))
            .collect();
        serde_json::json!({"object": "list", "data": data})
    };
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_model_and_stream_and_requires_fields() {
        let p =
            parse(Endpoint::ChatCompletions, br#"{"model":"m","messages":[],"stream":true,"x":{"y":[1,2]}}"#).unwrap();
        assert_eq!((p.model.as_str(), p.stream), ("m", true));
        let e = parse(Endpoint::ChatCompletions, br#"{"messages":[]}"#).unwrap_err();
        assert!(e.to_string().contains("'model'"));
        let e = parse(Endpoint::Messages, br#"{"model":"m"}"#).unwrap_err();
        assert!(e.to_string().contains("'messages'"));
        assert_eq!(parse(Endpoint::Embeddings, b"{not json").unwrap_err().status(), 400);
        assert_eq!(parse(Endpoint::Embeddings, b"[1]").unwrap_err().status(), 400);
        let p = parse(Endpoint::Embeddings, br#"{"model":"m\u0041","input":"x"}"#).unwrap();
        assert_eq!(p.model, "mA");
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
