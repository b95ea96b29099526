//! Passthrough of the rest of `/v1/*` (images, audio, files, batches, moderations, rerank, a provider's
//! own paths…): requests the gateway does not answer itself go, as they came, to the backend config
//! routes them to.
//!
//! Routing: by the body's `model` — the JSON field, or the `multipart/form-data` field — through the
//! model routes, else by path through the `"passthrough": true` routes (whole path segments), else 404
//! in OpenAI's shape. Nothing in the request chooses a host. A route backend's `model` renames the
//! field upstream (for multipart, only the bytes of that field change, in the part read to find it).
//! Each backend's provider says where the path goes below its base URL
//! (`Provider::passthrough_path`); backends that take no passthrough (Bedrock, the mock) are skipped.
//!
//! Bodies: JSON and other small bodies are read whole by the server (bounded by `max_body_bytes`);
//! uploads are streamed (`server::body`): only the part up to the `model` field is held — all of it
//! when the field comes after a file, which the official SDKs never do — and the rest is copied to the
//! upstream as it arrives. Once a streamed body has been read it cannot be sent again: no fallback or
//! retry follows an attempt that reached the upstream.
//!
//! Limits that count requests (and concurrency) apply as for any request; token limits reserve nothing
//! and are charged the usage the response reports. The answer streams back as it arrives: SSE through
//! the stream relay, JSON up to 8 MiB whole (its `usage` read), anything else (audio, files) piece by
//! piece.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::Read;
use std::ops::Range;

use super::observe::Observation;
use super::relay::Outcome;
use super::{admit, authenticate, forward, relay, send_plan, Attempt, Exchange, Target};
use crate::api::{Api, Endpoint};
use crate::error::GatewayError;
use crate::multipart::{ModelField, Scan};
use crate::providers::Provider;
use crate::server::{BodyError, Request, Responder};
use crate::snapshot::Snapshot;
use crate::upstream::SendBody;

/// Largest JSON answer held whole to read its usage; larger ones stream through untouched.
const MAX_JSON_HELD: u64 = 8 * 1024 * 1024;

/// How much of an upload is read at a time while looking for its `model` field.
const PREFIX_STEP: usize = 16 * 1024;

/// What the body says about routing.
struct Body {
    /// The client's `model`, if the body has one.
    model: Option<String>,
    /// Streamed: the bytes read to find `model` (sent first), and where its value is in them.
    prefix: Vec<u8>,
    model_range: Option<Range<usize>>,
    streamed: bool,
}

impl Body {
    fn read(req: &Request, resp: &mut Responder) -> Result<Body, GatewayError> {
        if !req.body_streamed {
            #[derive(serde::Deserialize)]
            struct ModelOnly<'a> {
                #[serde(borrow)]
                model: Option<Cow<'a, str>>,
            }
            let json = req.head.header("content-type").is_none_or(|c| c.to_ascii_lowercase().contains("json"));
            let model = json
                .then(|| serde_json::from_slice::<ModelOnly>(&req.body).ok())
                .flatten()
                .and_then(|m| m.model)
                .filter(|m| !m.is_empty())
                .map(Cow::into_owned);
            return Ok(Body { model, prefix: Vec::new(), model_range: None, streamed: false });
        }
        let mut body = Body { model: None, prefix: Vec::new(), model_range: None, streamed: true };
        let Some(boundary) = req.head.header("content-type").and_then(crate::multipart::boundary) else {
            return Ok(body);
        };
        let mut field = ModelField::new(&boundary);
        let mut reader = resp.body();
        loop {
            let start = body.prefix.len();
            body.prefix.resize(start + PREFIX_STEP, 0);
            let n = reader.read(&mut body.prefix[start..]).map_err(body_error);
            body.prefix.truncate(start + *n.as_ref().unwrap_or(&0));
            let n = n?;
            match field.scan(&body.prefix, n == 0) {
                Scan::More => continue,
                Scan::Absent => return Ok(body),
                Scan::Found(range) => {
                    let value = String::from_utf8_lossy(&body.prefix[range.clone()]).trim().to_string();
                    body.model = (!value.is_empty()).then_some(value);
                    body.model_range = Some(range);
                    return Ok(body);
                }
            }
        }
    }
}

fn body_error(e: std::io::Error) -> GatewayError {
    match BodyError::of(&e) {
        Some(b) => GatewayError::RequestBody { status: b.status, message: b.message.to_string() },
        None => GatewayError::RequestBody { status: 400, message: format!("reading the request body: {e}") },
    }
}

/// Serves a passed-through request end to end.
pub(super) fn serve<'s>(
    snapshot: &'s Snapshot,
    req: &Request,
    resp: &mut Responder,
    ids: &[(&str, &str)],
    obs: &mut Observation<'s>,
) -> Result<(), GatewayError> {
    let client = authenticate(snapshot, req)?;
    obs.set_client(client);
    let method = req.head.method();
    if !matches!(method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        return Err(GatewayError::MethodNotAllowed { allow: "GET, POST, PUT, PATCH, DELETE" });
    }
    let path = req.head.path();
    let query = req.head.target().split_once('?').map_or("", |(_, q)| q);
    let header = |name: &str| req.head.header(name);
    let cancel = resp.watch_client();
    let body = Body::read(req, resp)?;
    let by_model = body.model.as_deref().and_then(|m| snapshot.router.find(m, header).map(|r| (r, m)));
    let (route, label) = match by_model {
        Some((route, model)) => (route, model),
        None => match snapshot.router.find_path(path, header) {
            Some(route) => (route, route.model.label()),
            None => {
                return Err(match body.model {
                    Some(m) => GatewayError::ModelNotFound(m),
                    None => GatewayError::NotFound,
                })
            }
        },
    };
    if let Some(c) = client {
        if !c.may_use(label) {
            return Err(GatewayError::ModelNotAllowed(label.to_string()));
        }
    }
    let plan = route.plan(crate::router::random_draw());
    let client_name = client.map_or("anonymous", |c| c.name.as_str());
    obs.route = Some(route.model.label());
    let first = &snapshot.backends[plan[0].backend];
    let admission = admit::admit_by_requests(snapshot, client_name, label, &first.name, &header, &mut obs.limited_by)?;
    let headers = admission.response_headers(ids);

    let length = resp.body().length();
    let consumed = Cell::new(false);
    let sent = {
        let mut rest = resp.body();
        let mut attempt = |target: &Target, backend: &super::Backend| {
            let Some(upstream_path) = backend.provider.passthrough_path(path).filter(|_| backend.upstream.is_some())
            else {
                // This backend takes no passthrough: for it, the path does not exist.
                let schema = backend.provider.schema();
                crate::debug!("{path} is not passed through to backend \"{}\" (schema {schema})", backend.name);
                return Attempt::Skipped(GatewayError::NotFound);
            };
            let rename = match (&body.model, &target.model) {
                (Some(old), Some(new)) if old != new => Some((old.as_str(), new.as_str())),
                _ => None,
            };
            let result = if body.streamed {
                let prefix: Cow<[u8]> = match (rename, &body.model_range) {
                    (Some((_, new)), Some(range)) => {
                        let mut p = Vec::with_capacity(body.prefix.len() + new.len());
                        p.extend_from_slice(&body.prefix[..range.start]);
                        p.extend_from_slice(new.as_bytes());
                        p.extend_from_slice(&body.prefix[range.end..]);
                        Cow::Owned(p)
                    }
                    _ => Cow::Borrowed(&body.prefix),
                };
                let length = length.map(|n| n + prefix.len() as u64 - body.prefix.len() as u64);
                let result = forward(
                    backend,
                    target.backend,
                    req,
                    method,
                    &upstream_path,
                    query,
                    SendBody::Stream { prefix: &prefix, rest: &mut rest, length },
                    None,
                );
                if !matches!(
                    result,
                    Err(GatewayError::UpstreamConnect { .. }) | Err(GatewayError::BackendUnavailable(_))
                ) {
                    consumed.set(true);
                }
                result
            } else {
                let sent: Cow<[u8]> = match rename {
                    Some((old, new)) => match crate::json::with_model(&req.body, old, new) {
                        Ok(b) => b,
                        Err(e) => {
                            return Attempt::Sent(Err(GatewayError::BadRequest(format!("invalid JSON body: {e}"))))
                        }
                    },
                    None => Cow::Borrowed(&req.body),
                };
                forward(backend, target.backend, req, method, &upstream_path, query, SendBody::Bytes(&sent), None)
            };
            Attempt::Sent(result)
        };
        let replayable = || !body.streamed || !consumed.get();
        send_plan(snapshot, &plan, &route.retry, &cancel, &mut attempt, &replayable)
    };
    match sent {
        Ok(Some(exchange)) => {
            let backend = exchange.backend;
            let provider = &*snapshot.backends[backend].provider;
            let outcome = if streams_raw(&exchange) {
                relay_raw(exchange, provider, resp, &headers)
            } else {
                relay(exchange, provider, Endpoint::ChatCompletions, label, resp, &headers, obs.trace.is_some())
            };
            // No estimate for what reports no usage: files, audio and most of these are not tokens.
            let usage = outcome.usage.clone().unwrap_or_default();
            admission.settle(Some(&usage), 0);
            obs.outcome = Some(outcome);
            Ok(())
        }
        Ok(None) => {
            admission.settle_as_reserved();
            Ok(())
        }
        Err(e) => {
            let _ = super::send_error(resp, Api::OpenAi, &e, &headers);
            Ok(())
        }
    }
}

/// Whether an answer is relayed as raw pieces (audio, files, large or unsized JSON) rather than through
/// the relay's SSE pipeline or whole.
fn streams_raw(up: &Exchange) -> bool {
    let kind = up.content_type.as_deref().unwrap_or("").to_ascii_lowercase();
    if up.status >= 400 || kind.starts_with("text/event-stream") {
        return false;
    }
    let json = kind.starts_with("application/json") || kind.is_empty();
    !(json && up.content_length.is_some_and(|n| n <= MAX_JSON_HELD))
}

/// Relays the answer piece by piece as it arrives. A failure mid-way cuts the connection (the body
/// cannot say so): the client sees an incomplete body.
fn relay_raw(mut up: Box<Exchange>, provider: &dyn Provider, resp: &mut Responder, ids: &[(&str, &str)]) -> Outcome {
    let secrets = provider.secrets();
    super::relay::mask_relayed_headers(&mut up.passthrough, &super::relay::Masker::new(&secrets));
    let mut headers = super::relay::relayed_headers(&up.passthrough, ids, 1);
    headers.push(("content-type", up.content_type.as_deref().unwrap_or("application/octet-stream")));
    if resp.start(up.status, &headers).is_err() {
        return Outcome::default();
    }
    let mut piece = vec![0u8; 16 * 1024];
    loop {
        match up.body.read(&mut piece) {
            Ok(0) => {
                let _ = resp.finish();
                return Outcome::default();
            }
            Ok(n) => {
                if resp.chunk(&piece[..n]).is_err() {
                    return Outcome::default();
                }
            }
            Err(e) => {
                crate::warn_throttled!("a passed-through answer was cut: {e}");
                return Outcome::default();
            }
        }
    }
}
