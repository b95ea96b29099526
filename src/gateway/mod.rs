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

pub mod admit;
pub mod observe;
mod passthrough;
mod relay;
pub mod responses;

use std::borrow::Cow;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::api::{Api, Endpoint, ResponseCall};
use crate::config::RetryConfig;
use crate::error::GatewayError;
use crate::health::{Admit, Transition};
use crate::metrics;
use crate::providers::{mock, Framing, Outgoing};
use crate::retry::AttemptFailure;
use crate::router::{random_draw, Route, Target};
use crate::server::{Request, Responder};
use crate::snapshot::{AdminAuth, Backend, Client, Snapshot};
use crate::translate::{Pair, RequestOptions, ResponseOptions};
use crate::upstream::{Cancel, ResponseBody, SendBody, UpstreamError};

pub use observe::{AttemptOutcome, Attempts, Observation};
pub use relay::{relay, Outcome};

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

/// Serves one request on the admin listener: `/metrics`, `/ready` and `/health` only. These are
/// counted in `switchyard_requests_total` but not written to the access log.
pub fn handle_admin(req: &Request, resp: &mut Responder) {
    let snapshot = crate::snapshot::current();
    let method = req.head.method();
    let get = method == "GET" || method == "HEAD";
    let result = match req.head.path() {
        "/health" | "/healthz" if get => {
            health(resp, &[]);
            Ok(())
        }
        "/ready" | "/readyz" if get => {
            ready(resp, &[]);
            Ok(())
        }
        "/metrics" if method == "GET" => metrics_page(&snapshot, req, resp, &[]),
        "/health" | "/healthz" | "/ready" | "/readyz" => Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" }),
        "/metrics" => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
        _ => Err(GatewayError::NotFound),
    };
    let error = match result {
        Ok(()) => metrics::EMPTY,
        Err(e) => {
            let _ = send_error(resp, Api::OpenAi, &e, &[]);
            metrics::label(e.kind())
        }
    };
    metrics::count_request(metrics::EMPTY, resp.status(), error);
}

fn health(resp: &mut Responder, ids: &[(&str, &str)]) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(ids);
    let _ = resp.send(200, &headers, br#"{"status":"ok"}"#);
}

/// `GET /ready`: 200 while the gateway serves; 503 before its first config is in use and while it
/// drains at shutdown.
fn ready(resp: &mut Responder, ids: &[(&str, &str)]) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(ids);
    let (status, body): (u16, &[u8]) = match crate::runtime::readiness() {
        crate::runtime::Readiness::Ready => (200, br#"{"status":"ready"}"#),
        crate::runtime::Readiness::Starting => (503, br#"{"status":"starting"}"#),
        crate::runtime::Readiness::Draining => (503, br#"{"status":"draining"}"#),
    };
    let _ = resp.send(status, &headers, body);
}

/// `GET /metrics`, behind `admin_key` when one is configured.
fn metrics_page(
    snapshot: &Snapshot,
    req: &Request,
    resp: &mut Responder,
    ids: &[(&str, &str)],
) -> Result<(), GatewayError> {
    match &snapshot.admin {
        AdminAuth::Open => {}
        AdminAuth::Unset => return Err(GatewayError::Unauthorized),
        AdminAuth::Key(key) => {
            let given = req
                .head
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .unwrap_or("");
            if !crate::snapshot::constant_time_eq(key.0.as_bytes(), given.as_bytes()) {
                return Err(GatewayError::Unauthorized);
            }
        }
    }
    let body = metrics::render();
    let mut headers = vec![("content-type", "text/plain; version=0.0.4")];
    headers.extend_from_slice(ids);
    let _ = resp.send(200, &headers, body.as_bytes());
    Ok(())
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
            obs.client = Some(client.map_or("anonymous", |c| c.name.as_str()));
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
            let client_name = client.map_or("anonymous", |c| c.name.as_str());
            obs.client = Some(client_name);
            if req.body_streamed {
                return Err(GatewayError::BadRequest(format!("{} takes a JSON body", req.head.path())));
            }
            let peek = parse(endpoint, &req.body)?;
            obs.stream = peek.stream;
            obs.model = Some(peek.model.clone());
            // A model no route matched shares one label value: clients cannot grow the label set.
            obs.model_label = metrics::OVERFLOW;
            let (matched, mut plan) = route(snapshot, req, client, &peek.model)?;
            if let Some((tag, _)) = peek.previous_response_id.as_deref().and_then(responses::decode) {
                // A continuation goes to the backend that stored the conversation, when the route has it.
                let pinned: Vec<&Target> = plan
                    .iter()
                    .copied()
                    .filter(|t| responses::tag(&snapshot.backends[t.backend].name) == tag)
                    .collect();
                if !pinned.is_empty() {
                    plan = pinned;
                }
            }
            let route_label = matched.model.label();
            obs.route = Some(route_label);
            obs.model_label = if route_label.ends_with('*') {
                metrics::model_label(&peek.model)
            } else {
                metrics::label(&peek.model)
            };
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
                        max_output: admit::output_reservation(snapshot, reserved_output(endpoint, &peek, first)),
                    },
                    &mut obs.limited_by,
                )?
            };
            obs.limits.clone_from(&admission.applied);
            let mut headers: Vec<(&str, &str)> = ids.to_vec();
            headers.extend(admission.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let cancel = resp.watch_client();
            match send(snapshot, req, endpoint, &peek, &plan, &matched.retry, &cancel, &mut obs.attempts) {
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
    /// Responses: the stored response a request continues.
    pub previous_response_id: Option<String>,
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
    max_output_tokens: Option<u64>,
    reasoning: Option<ReasoningPeek>,
    previous_response_id: Option<String>,
}

#[derive(Deserialize)]
struct ReasoningPeek {
    effort: Option<String>,
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
        // `input` may be absent (a stored prompt): what the backend needs, it says.
        Endpoint::Responses | Endpoint::ResponsesInputTokens => true,
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
        }
        .or(fields.max_output_tokens),
        reasoning_effort: fields.reasoning_effort.or(fields.reasoning.and_then(|r| r.effort)),
        include_usage: fields.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        previous_response_id: fields.previous_response_id,
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
    snapshot.client_by_key(key).map(Some).ok_or(GatewayError::Unauthorized)
}

/// Phase 3: the route and the ordered backends to try.
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
    pub path: String,
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
    let created = crate::clock::unix_secs();
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
            response: ResponseOptions { created, ..ResponseOptions::default() },
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
        (body, None, ResponseOptions { created, ..ResponseOptions::default() }, strip_usage)
    } else {
        let pair = Pair::between(endpoint.client_api(), provider.api()).ok_or_else(unsupported)?;
        let options = RequestOptions { model: Some(model.to_string()), default_max_tokens: backend.default_max_tokens };
        let t = pair
            .request(endpoint, &req.body, &options, created)
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
    pub content_type: Option<String>,
    /// Response headers relayed to the client.
    pub passthrough: Vec<(String, String)>,
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
        || name == "content-disposition"
}

/// Phase 5: sends to the plan's backends in turn until one answers; falls back on connect failures,
/// timeouts, 429 and 5xx. Backends that passive health ejected are skipped (unless all are: then the
/// least recently failed is tried). When every backend failed in a way that shows the request was not
/// processed (connect failure, 429, 503 with a hint), it is retried up to the route's `retry.retries`
/// times after the provider's hinted wait or a jittered back-off, within `retry.deadline_ms`.
/// `None`: the client went away. Each attempt, and each backend passed over, is recorded in `attempts`.
#[allow(clippy::too_many_arguments)] // the request's parts, the plan and its policy, and the two observers
fn send(
    snapshot: &Snapshot,
    req: &Request,
    endpoint: Endpoint,
    peek: &RequestPeek,
    plan: &[&Target],
    retry: &RetryConfig,
    cancel: &Arc<Cancel>,
    attempts: &mut Attempts,
) -> Result<Option<Exchange>, GatewayError> {
    let mut attempt = |target: &Target, backend: &Backend| {
        let model = target.model.as_deref().unwrap_or(&peek.model);
        match prepare(endpoint, backend, req, peek, model) {
            Err(e) => {
                attempts.skip(target.backend, "unsupported");
                Attempt::Skipped(e)
            }
            Ok(prepared) => {
                let traceparent = attempts.begin(target.backend, model);
                let result = match backend.provider.mock() {
                    Some(mock) => send_mock(mock, target.backend, prepared, model),
                    None => send_http(backend, target.backend, req, prepared, traceparent.as_deref()),
                };
                attempts.end(match &result {
                    Ok(up) => AttemptOutcome::Answered(up.status),
                    Err(e) => AttemptOutcome::Failed(e.kind()),
                });
                Attempt::Sent(result)
            }
        }
    };
    send_plan(snapshot, plan, retry, cancel, &mut attempt, &|| true)
}

/// One try on one backend.
pub(crate) enum Attempt {
    /// What sending gave.
    Sent(Result<Exchange, GatewayError>),
    /// This backend cannot take the request at all (another of the route may).
    Skipped(GatewayError),
}

/// The loop of [`send`] for any kind of request: `attempt` tries one backend; `replayable` says whether
/// the request can still be sent again (a streamed upload, once read, cannot: no fallback or retry
/// after it).
pub(crate) fn send_plan(
    snapshot: &Snapshot,
    plan: &[&Target],
    retry: &RetryConfig,
    cancel: &Arc<Cancel>,
    attempt: &mut dyn FnMut(&Target, &Backend) -> Attempt,
    replayable: &dyn Fn() -> bool,
) -> Result<Option<Exchange>, GatewayError> {
    let started = crate::clock::unix_millis();
    let candidates = by_health(snapshot, plan, started);
    let mut last_error = None;
    let mut retries = 0;
    let mut next = 0;
    loop {
        let target = candidates[next % candidates.len()];
        next += 1;
        let more = next < candidates.len();
        let backend = &snapshot.backends[target.backend];
        let result = match attempt(target, backend) {
            Attempt::Sent(result) => result,
            Attempt::Skipped(e) if more => {
                crate::debug!("backend \"{}\" skipped: {e}", backend.name);
                metrics::count_fallback(&backend.name, "unsupported");
                last_error = Some(e);
                continue;
            }
            Attempt::Skipped(e) => return Err(last_error.filter(|_| next > 1).unwrap_or(e)),
        };
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let failure = match &result {
            Ok(up) if up.status == 429 || up.status >= 500 => {
                Some(AttemptFailure::Status { status: up.status, hinted: up.retry_hint_ms.is_some() })
            }
            Ok(_) => None,
            Err(GatewayError::UpstreamConnect { .. }) => Some(AttemptFailure::Connect),
            Err(e) if e.may_fall_back() => Some(AttemptFailure::Other),
            Err(_) => None,
        };
        record_health(snapshot, backend, &result);
        let Some(failure) = failure else { return result.map(Some) };
        if !replayable() {
            return result.map(Some);
        }
        if more {
            match &result {
                Ok(up) => {
                    metrics::count_fallback(&backend.name, if up.status == 429 { "status_429" } else { "status_5xx" });
                    crate::warn_throttled!("backend \"{}\" answered {}; falling back", backend.name, up.status)
                }
                Err(e) => {
                    metrics::count_fallback(&backend.name, e.kind());
                    crate::warn_throttled!("backend \"{}\" failed: {e}; falling back", backend.name)
                }
            }
            if let Err(e) = result {
                last_error = Some(e);
            }
            continue;
        }
        // Every candidate was tried: retry when the request was certainly not processed.
        let hint = result.as_ref().ok().and_then(|up| up.retry_hint_ms);
        let remaining = (started + retry.deadline_ms).saturating_sub(crate::clock::unix_millis());
        let wait = (failure.may_retry() && retries < retry.retries)
            .then(|| crate::retry::wait_ms(retry, retries, hint, remaining, random_draw()))
            .flatten();
        let Some(wait) = wait else { return result.map(Some) };
        retries += 1;
        let reason = match failure {
            AttemptFailure::Connect => "connect_error",
            AttemptFailure::Status { status: 429, .. } => "status_429",
            AttemptFailure::Status { .. } => "status_503",
            AttemptFailure::Other => "other",
        };
        metrics::count_retry(&backend.name, reason);
        crate::debug!("retrying in {wait} ms after {failure:?} from backend \"{}\"", backend.name);
        may::coroutine::sleep(std::time::Duration::from_millis(wait));
        if cancel.is_cancelled() {
            return Ok(None);
        }
        // The next round starts again from the first candidate.
        next = 0;
        last_error = None;
    }
}

/// The plan without the backends passive health ejected, in plan order; when every one is ejected, the
/// least recently failed alone.
fn by_health<'p>(snapshot: &Snapshot, plan: &[&'p Target], now: u64) -> Vec<&'p Target> {
    let usable: Vec<&Target> = plan
        .iter()
        .copied()
        .filter(|t| !matches!(snapshot.backends[t.backend].health.admit(now, &snapshot.health), Admit::Ejected { .. }))
        .collect();
    if !usable.is_empty() {
        return usable;
    }
    let least_recent = plan.iter().copied().min_by_key(|t| snapshot.backends[t.backend].health.last_failure());
    least_recent.into_iter().collect()
}

/// Feeds an attempt's outcome to the backend's passive health; logs and counts ejections once.
fn record_health(snapshot: &Snapshot, backend: &Backend, result: &Result<Exchange, GatewayError>) {
    let now = crate::clock::unix_millis();
    let failed = match result {
        Ok(up) => snapshot.config.health.statuses.contains(&up.status),
        Err(e) => e.may_fall_back() && !matches!(e, GatewayError::BackendUnavailable(_)),
    };
    let transition = if failed { backend.health.failure(now, &snapshot.health) } else { backend.health.success() };
    match transition {
        Some(Transition::Ejected(ms)) => {
            metrics::EJECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::warn!("backend \"{}\" ejected for {ms} ms after repeated failures", backend.name);
        }
        Some(Transition::Restored) => {
            metrics::RESTORATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::info!("backend \"{}\" restored", backend.name);
        }
        None => {}
    }
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
        retry_hint_ms: None,
        body: Box::new(mock::MockBody::new(reply.chunks, mock.chunk_delay)),
        content_length: None,
        endpoint: Some(prepared.endpoint),
        pair: prepared.pair,
        response: prepared.response,
        api: Api::OpenAi,
        framing: Framing::Sse,
        strip_usage: prepared.strip_usage,
        backend: index,
        id_tag: None,
    })
}

/// `traceparent`: the attempt's span, sent instead of the client's (traced requests).
fn send_http(
    backend: &Backend,
    index: usize,
    req: &Request,
    prepared: Prepared,
    traceparent: Option<&str>,
) -> Result<Exchange, GatewayError> {
    let body = SendBody::Bytes(&prepared.body);
    let mut exchange = forward(backend, index, req, "POST", &prepared.path, "", body, traceparent)?;
    exchange.endpoint = Some(prepared.endpoint);
    exchange.pair = prepared.pair;
    exchange.response = prepared.response;
    exchange.api = prepared.api;
    exchange.strip_usage = prepared.strip_usage;
    exchange.id_tag = prepared.id_tag;
    Ok(exchange)
}

/// Sends one request to `backend` at `path` (below its base URL) with the client's forwardable headers,
/// the backend's own headers and credential. The exchange it gives treats the answer as passed through
/// (the caller says otherwise).
#[allow(clippy::too_many_arguments)] // what goes upstream: where (method, path, query), what, and the trace
pub(crate) fn forward(
    backend: &Backend,
    index: usize,
    req: &Request,
    method: &str,
    path: &str,
    query: &str,
    body: SendBody,
    traceparent: Option<&str>,
) -> Result<Exchange, GatewayError> {
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
            // A traced request continues the trace from this attempt's span.
            || (traceparent.is_some() && named("traceparent"))
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
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp));
    }
    let content_type = match req.head.header("content-type") {
        Some(c) => c,
        None if matches!(method, "GET" | "DELETE") => "",
        None => {
            headers.push(("content-type", "application/json"));
            "application/json"
        }
    };
    // A provider's path may carry its own query (`?alt=sse`, `?api-version=…`), sent with the client's.
    let (path, path_query) = path.split_once('?').unwrap_or((path, ""));
    let joined;
    let query = match (path_query.is_empty(), query.is_empty()) {
        (true, _) => query,
        (false, true) => path_query,
        (false, false) => {
            joined = format!("{path_query}&{query}");
            &joined
        }
    };
    let sent_query = match (client.query().is_empty(), query.is_empty()) {
        (true, _) => std::borrow::Cow::Borrowed(query),
        (false, true) => std::borrow::Cow::Borrowed(client.query()),
        (false, false) => std::borrow::Cow::Owned(format!("{}&{query}", client.query())),
    };
    let full_path = format!("{}{}", client.base_path(), path);
    let signed: &[u8] = match &body {
        SendBody::Bytes(b) => b,
        SendBody::Stream { prefix, .. } => prefix,
    };
    let outgoing =
        Outgoing { authority: client.authority(), path: &full_path, query: &sent_query, content_type, body: signed };
    let mut credentials = Vec::new();
    provider.authorize(&outgoing, crate::clock::unix_secs(), &mut credentials).map_err(|missing| {
        GatewayError::BackendUnavailable(format!("backend \"{}\" has no credential: {missing}", backend.name))
    })?;
    headers.extend(credentials.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let response = client.request(method, path, query, &headers, body).inspect_err(|e| match e {
        UpstreamError::Connect { timed_out: true, .. } => {
            metrics::count_upstream_timeout(&backend.name, metrics::TimeoutPhase::Connect)
        }
        UpstreamError::Timeout(_) => metrics::count_upstream_timeout(&backend.name, metrics::TimeoutPhase::Response),
        _ => {}
    });
    let response = response.map_err(|e| match e {
        UpstreamError::Connect { timed_out, message } => GatewayError::UpstreamConnect {
            timed_out,
            message: format!("backend \"{}\" unreachable: {message}", backend.name),
        },
        UpstreamError::Timeout(m) => GatewayError::UpstreamTimeout(format!("backend \"{}\": {m}", backend.name)),
        UpstreamError::Unreachable(m) => {
            GatewayError::UpstreamUnreachable(format!("backend \"{}\" unreachable: {m}", backend.name))
        }
        UpstreamError::RequestBody(e) => match crate::server::BodyError::of(&e) {
            Some(b) => GatewayError::RequestBody { status: b.status, message: b.message.to_string() },
            None => GatewayError::RequestBody { status: 400, message: format!("reading the request body: {e}") },
        },
    })?;
    let mut content_type = None;
    let mut content_length = None;
    let mut error_type = None;
    let mut passthrough = Vec::new();
    let retry_hint_ms =
        if response.status == 429 || response.status >= 500 { crate::retry::hint_ms(&response.headers) } else { None };
    for (name, value) in response.headers {
        if name == "content-type" {
            content_type = Some(value);
        } else if name == "content-length" {
            content_length = value.parse().ok();
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
        retry_hint_ms,
        body: Box::new(response.body),
        content_length,
        endpoint: None,
        pair: None,
        response: ResponseOptions::default(),
        api: provider.api(),
        framing: provider.framing(),
        strip_usage: false,
        backend: index,
        id_tag: None,
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
}
