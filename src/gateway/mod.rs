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
//! 8. [`observe`] (record): the admission is settled with that usage; metrics, the access log line and
//!    the trace's spans report what the request did.
//!
//! Each phase is a function; the order lives in [`serve`].

mod admin;
pub mod admit;
pub mod attempts;
pub mod observe;
mod passthrough;
pub mod peek;
mod relay;
pub mod responses;
mod send;

use std::borrow::Cow;

use serde_json::Value;

use crate::api::{Api, Endpoint, ResponseCall};
use crate::error::GatewayError;
use crate::metrics;
use crate::providers::Framing;
use crate::router::{random_draw, Route, Target};
use crate::server::{Request, Responder};
use crate::snapshot::{Backend, Client, Snapshot};
use crate::translate::{Pair, RequestOptions, ResponseOptions};
use crate::upstream::ResponseBody;

pub use admin::handle_admin;
use admin::{health, metrics_page, ready};
pub use attempts::{AttemptOutcome, Attempts};
pub use observe::Observation;
pub use peek::{parse, RequestPeek};
pub use relay::{relay, Outcome};
use send::send;
pub(crate) use send::{forward, send_plan, Attempt};

/// Serves one request end to end (the public listener).
pub fn handle(req: &Request, resp: &mut Responder) {
    let snapshot = crate::snapshot::current();
    let request_id = crate::server::request_id(Some(&req.head));
    let ids: [(&str, &str); 1] = [("x-request-id", &request_id)];
    let client_api = crate::server::api_for_path(req.head.path());
    let mut obs = Observation::new(req);
    if let Err(e) = serve(&snapshot, req, resp, &ids, &mut obs) {
        obs.error = Some(e.kind());
        if !resp.started() {
            let _ = send_error(resp, client_api, &e, &ids);
        }
    }
    obs.finish(&snapshot, req, resp, &request_id);
}

fn serve<'s>(
    snapshot: &'s Snapshot,
    req: &Request,
    resp: &mut Responder,
    ids: &[(&str, &str)],
    obs: &mut Observation<'s>,
) -> Result<(), GatewayError> {
    match parse_operation(snapshot, req)? {
        Operation::Health => {
            health(resp, ids);
            Ok(())
        }
        Operation::Ready => {
            ready(resp, ids);
            Ok(())
        }
        Operation::Metrics => metrics_page(snapshot, req, resp, ids),
        Operation::Models => {
            let client = authenticate(snapshot, req)?;
            obs.set_client(client);
            let anthropic_shape =
                req.head.header("anthropic-version").is_some() || req.head.path().starts_with("/anthropic/");
            let body = list_models(snapshot, client, anthropic_shape);
            let _ = resp.send(200, &[("content-type", "application/json"), ids[0]], &body);
            Ok(())
        }
        Operation::ResponseCall(call, id) => responses::serve_call(snapshot, req, resp, ids, call, &id, obs),
        Operation::Passthrough => passthrough::serve(snapshot, req, resp, ids, obs),
        Operation::Proxy(endpoint) => {
            obs.operation = Some(endpoint);
            // Authenticate first: an unauthenticated caller learns nothing about its body.
            let client = authenticate(snapshot, req)?;
            let client_name = obs.set_client(client);
            if req.body_streamed {
                return Err(GatewayError::BadRequest(format!("{} takes a JSON body", req.head.path())));
            }
            let peek = parse(endpoint, &req.body)?;
            obs.stream = peek.stream;
            let result = proxy(snapshot, req, resp, ids, obs, endpoint, (client, client_name), &peek);
            // Moved, not copied, once nothing else reads it: the access log and spans name it.
            obs.model = Some(peek.model);
            result
        }
    }
}

/// Phases 3 to 6 of a proxied request whose body was read (`peek`): route, admit, send, relay. Inlined
/// into `serve`: as a frame of its own it made a waiting stream's stack 0.8 KiB deeper.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the request, its response, and what the first phases found
fn proxy<'s>(
    snapshot: &'s Snapshot,
    req: &Request,
    resp: &mut Responder,
    ids: &[(&str, &str)],
    obs: &mut Observation<'s>,
    endpoint: Endpoint,
    (client, client_name): (Option<&'s Client>, &'s str),
    peek: &RequestPeek,
) -> Result<(), GatewayError> {
    // A model no route matched shares one label value: clients cannot grow the label set.
    obs.model_label = metrics::OVERFLOW;
    let (matched, mut plan) = route(snapshot, req, client, &peek.model)?;
    if let Some((tag, _)) = peek.previous_response_id.as_deref().and_then(responses::decode) {
        // A continuation goes to the backend that stored the conversation, when the route has it.
        let pinned: Vec<&Target> =
            plan.iter().copied().filter(|t| responses::tag(&snapshot.backends[t.backend].name) == tag).collect();
        if !pinned.is_empty() {
            plan = pinned;
        }
    }
    let route_label = matched.model.label();
    obs.route = Some(route_label);
    obs.model_label = matched.model.label_of_matched(&peek.model);
    let header = |name: &str| req.head.header(name);
    let first = &snapshot.backends[plan[0].backend];
    // Counting tokens is free upstream: it is not charged against limits.
    let admission = if matches!(endpoint, Endpoint::CountTokens | Endpoint::ResponsesInputTokens) {
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
                max_output: admit::output_reservation(snapshot, reserved_output(endpoint, peek, first)),
            },
            &mut obs.limited_by,
        )?
    };
    obs.limits.clone_from(&admission.applied);
    let headers = admission.response_headers(ids);
    let cancel = resp.watch_client();
    match send(snapshot, req, endpoint, peek, &plan, &matched.retry, &cancel, &mut obs.attempts) {
        Ok(Some(exchange)) => {
            let backend = exchange.backend;
            let provider = &*snapshot.backends[backend].provider;
            let traced = obs.trace.is_some();
            let outcome = relay(exchange, provider, endpoint, &peek.model, resp, &headers, traced);
            admission.settle(outcome.usage.as_ref(), outcome.estimated_output);
            obs.outcome = Some(outcome);
            Ok(())
        }
        // The client went away after the request may have reached the upstream, which may
        // have generated everything it was allowed to: keep the reservation.
        Ok(None) => {
            admission.settle_as_reserved();
            obs.cancelled = true;
            Ok(())
        }
        Err(e) => {
            obs.error = Some(e.kind());
            let _ = send_error(resp, endpoint.client_api(), &e, &headers);
            Ok(())
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
    let chat = matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Responses);
    let translated = chat && upstream != Api::OpenAi;
    let thinking = match peek.reasoning_effort.as_deref() {
        Some("low") if translated => 1024,
        Some("medium") if translated => 4096,
        Some("high") if translated => 16384,
        _ => 0,
    };
    let to_anthropic = chat && upstream == Api::Anthropic;
    match peek.max_output {
        Some(n) => Some(n.saturating_add(thinking)),
        None if to_anthropic => Some(u64::from(backend.default_max_tokens).saturating_add(thinking)),
        None => None,
    }
}

enum Operation {
    Health,
    Ready,
    Metrics,
    Models,
    Proxy(Endpoint),
    /// A call on a response a backend stored (`/v1/responses/{id}…`).
    ResponseCall(ResponseCall, String),
    /// Any other `/v1/*` request: passed through to the backend config routes it to.
    Passthrough,
}

fn parse_operation(snapshot: &Snapshot, req: &Request) -> Result<Operation, GatewayError> {
    let method = req.head.method();
    let path = req.head.path();
    let path = path.strip_prefix("/anthropic").filter(|p| p.starts_with("/v1/")).unwrap_or(path);
    let (op, allow) = match path {
        "/health" | "/healthz" => (Operation::Health, "GET, HEAD"),
        "/ready" | "/readyz" => (Operation::Ready, "GET, HEAD"),
        // With an admin listener, metrics are served there only.
        "/metrics" if snapshot.config.admin_listen.is_none() => (Operation::Metrics, "GET"),
        "/v1/models" => (Operation::Models, "GET, HEAD"),
        "/v1/chat/completions" => (Operation::Proxy(Endpoint::ChatCompletions), "POST"),
        "/v1/completions" => (Operation::Proxy(Endpoint::Completions), "POST"),
        "/v1/embeddings" => (Operation::Proxy(Endpoint::Embeddings), "POST"),
        "/v1/messages" => (Operation::Proxy(Endpoint::Messages), "POST"),
        "/v1/messages/count_tokens" => (Operation::Proxy(Endpoint::CountTokens), "POST"),
        "/v1/responses" => (Operation::Proxy(Endpoint::Responses), "POST"),
        "/v1/responses/input_tokens" => (Operation::Proxy(Endpoint::ResponsesInputTokens), "POST"),
        _ => match path.strip_prefix("/v1/responses/").and_then(|rest| ResponseCall::parse(method, rest)) {
            Some(Ok((call, id))) => return Ok(Operation::ResponseCall(call, id.to_string())),
            Some(Err(allow)) => return Err(GatewayError::MethodNotAllowed { allow }),
            // The gateway's own paths under `/anthropic/` are the only ones there; passthrough checks
            // its own methods.
            None if req.head.path().starts_with("/v1/") => return Ok(Operation::Passthrough),
            None => return Err(GatewayError::NotFound),
        },
    };
    // Most operations allow one method: compared whole before the list is split.
    if allow == method || allow.split(", ").any(|m| m == method) {
        Ok(op)
    } else {
        Err(GatewayError::MethodNotAllowed { allow })
    }
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
    snapshot.client_by_key(key).map(Some).ok_or(GatewayError::Unauthorized)
}

/// Phase 3: the route and the ordered backends to try. Out of line: see [`Observation::finish`].
#[inline(never)]
pub fn route<'s>(
    snapshot: &'s Snapshot,
    req: &Request,
    client: Option<&Client>,
    model: &str,
) -> Result<(&'s Route, Vec<&'s Target>), GatewayError> {
    if let Some(c) = client {
        if !c.may_use(model) {
            return Err(GatewayError::ModelNotAllowed(model.to_string()));
        }
    }
    let route = snapshot
        .router
        .find(model, |name| req.head.header(name))
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_string()))?;
    Ok((route, route.plan(random_draw())))
}

/// The upstream request for one backend.
pub struct Prepared<'a> {
    /// The path below the backend's base URL.
    pub path: Cow<'static, str>,
    /// The operation in the upstream's family.
    pub endpoint: Endpoint,
    pub body: Cow<'a, [u8]>,
    /// The translator back to the client's API (`None`: same API, relayed as it comes).
    pub pair: Option<Pair>,
    pub response: ResponseOptions,
    /// The gateway asked the upstream for stream usage the client did not ask for: hide that chunk.
    pub strip_usage: bool,
    /// The family of the upstream's bytes (`Api::Responses` for a passed-through response).
    pub api: Api,
    /// A passed-through response: the backend's tag for the ids the client receives.
    pub id_tag: Option<String>,
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
    // Responses clients are passed through to backends that serve the API themselves.
    let responses_passthrough = endpoint.client_api() == Api::Responses && provider.serves_responses();
    let upstream_endpoint = if responses_passthrough { Some(endpoint) } else { endpoint.in_family(provider.api()) }
        .ok_or_else(unsupported)?;
    let path = provider.path(upstream_endpoint, model, peek.stream).ok_or_else(unsupported)?;
    let invalid = |e: serde_json::Error| GatewayError::BadRequest(format!("invalid JSON body: {e}"));
    if responses_passthrough {
        let mut body = crate::json::with_model(&req.body, &peek.model, model).map_err(invalid)?;
        if let Some((_, upstream_id)) = peek.previous_response_id.as_deref().and_then(responses::decode) {
            let value = serde_json::to_vec(&upstream_id).map_err(invalid)?;
            body = Cow::Owned(crate::json::set_top_level(&body, "previous_response_id", &value).map_err(invalid)?);
        }
        let body = provider.finish_body(upstream_endpoint, body, &|name| req.head.header(name))?;
        return Ok(Prepared {
            path,
            endpoint: upstream_endpoint,
            body,
            pair: None,
            response: ResponseOptions { created: crate::clock::unix_secs(), ..ResponseOptions::default() },
            strip_usage: false,
            api: Api::Responses,
            id_tag: Some(responses::tag(&backend.name)),
        });
    }
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
        // Same family: nothing is translated back, so no `created` is needed.
        (body, None, ResponseOptions::default(), strip_usage)
    } else {
        let pair = Pair::between(endpoint.client_api(), provider.api()).ok_or_else(unsupported)?;
        let options = RequestOptions { model: Some(model.to_string()), default_max_tokens: backend.default_max_tokens };
        let t = pair
            .request(endpoint, &req.body, &options, crate::clock::unix_secs())
            .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        if !t.dropped.is_empty() {
            crate::debug!("dropped for backend \"{}\": {}", backend.name, t.dropped.join(", "));
        }
        // A token count answers in the client's shape (the provider makes it so): nothing to translate back.
        let pair = (endpoint != Endpoint::CountTokens).then_some(pair);
        (Cow::Owned(t.body), pair, t.response, false)
    };
    let body = provider.finish_body(upstream_endpoint, body, &|name| req.head.header(name))?;
    Ok(Prepared {
        path,
        endpoint: upstream_endpoint,
        body,
        pair,
        response,
        strip_usage,
        api: provider.api(),
        id_tag: None,
    })
}

/// An upstream response whose head arrived; its body is still to be read.
pub struct Exchange {
    pub status: u16,
    pub content_type: Option<Cow<'static, str>>,
    /// Response headers relayed to the client (see [`relay::relayed_headers`]).
    pub passthrough: crate::upstream::ResponseHeaders,
    /// The upstream's error type header (`x-amzn-ErrorType`), for providers whose errors carry it.
    pub error_type: Option<String>,
    /// How long the upstream asked to wait before trying again (`Retry-After` and kin), in ms.
    pub retry_hint_ms: Option<u64>,
    pub body: Box<dyn ResponseBody>,
    /// `content-length` of the body, when the upstream sent one.
    pub content_length: Option<u64>,
    /// The operation in the upstream's family (`None` for a request passed through as it came).
    pub endpoint: Option<Endpoint>,
    pub pair: Option<Pair>,
    pub response: ResponseOptions,
    /// The family of the upstream's bytes and how its streams are framed.
    pub api: Api,
    pub framing: Framing,
    pub strip_usage: bool,
    /// Index of the backend that answered.
    pub backend: usize,
    /// A passed-through Responses answer: the tag its ids get (see [`responses`]).
    pub id_tag: Option<String>,
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
}
