//! Phase 5: the upstream request, tried on the plan's backends in turn (with fallback, retries and
//! passive health), and the one HTTP exchange with a backend that each try is.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::api::{Api, Endpoint};
use crate::config::RetryConfig;
use crate::error::GatewayError;
use crate::health::{Admit, Transition};
use crate::metrics;
use crate::providers::{mock, Framing, Outgoing};
use crate::retry::AttemptFailure;
use crate::router::{random_draw, Target};
use crate::server::Request;
use crate::snapshot::{Backend, Snapshot};
use crate::translate::ResponseOptions;
use crate::upstream::{Cancel, SendBody, UpstreamError};

use super::{prepare, AttemptOutcome, Attempts, Exchange, Prepared, RequestPeek};

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

/// For each name length, the [`NOT_FORWARDED`] names of that length, one bit each: a client header
/// is compared in full only with the few names as long as it is.
static NOT_FORWARDED_BY_LENGTH: [u32; 32] = {
    assert!(NOT_FORWARDED.len() <= 32);
    let mut by_length = [0; 32];
    let mut i = 0;
    while i < NOT_FORWARDED.len() {
        assert!(NOT_FORWARDED[i].len() < 32);
        by_length[NOT_FORWARDED[i].len()] |= 1 << i;
        i += 1;
    }
    by_length
};

/// Whether a client's header is never forwarded: one of [`NOT_FORWARDED`], or any `proxy-*`.
fn never_forwarded(name: &str) -> bool {
    let mut candidates = NOT_FORWARDED_BY_LENGTH.get(name.len()).copied().unwrap_or(0);
    while candidates != 0 {
        if crate::server::http1::name_is(
            name.as_bytes(),
            NOT_FORWARDED[candidates.trailing_zeros() as usize].as_bytes(),
        ) {
            return true;
        }
        candidates &= candidates - 1;
    }
    name.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

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
/// Out of line: see [`super::Observation::finish`].
#[allow(clippy::too_many_arguments)] // the request's parts, the plan and its policy, and the two observers
#[inline(never)]
pub(super) fn send(
    snapshot: &Snapshot,
    req: &Request,
    endpoint: Endpoint,
    peek: &RequestPeek,
    plan: &[&Target],
    retry: &RetryConfig,
    cancel: &Arc<Cancel>,
    attempts: &mut Attempts,
) -> Result<Option<Box<Exchange>>, GatewayError> {
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
    Sent(Result<Box<Exchange>, GatewayError>),
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
) -> Result<Option<Box<Exchange>>, GatewayError> {
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
        crate::affinity::sleep(std::time::Duration::from_millis(wait));
        if cancel.is_cancelled() {
            return Ok(None);
        }
        // The next round starts again from the first candidate.
        next = 0;
        last_error = None;
    }
}

/// The plan without the backends passive health ejected, in plan order; when every one is ejected, the
/// least recently failed alone. The plan itself (no copy) when none is ejected.
fn by_health<'a, 'p>(snapshot: &Snapshot, plan: &'a [&'p Target], now: u64) -> Cow<'a, [&'p Target]> {
    // `admit` is asked once per backend: it starts a probe of a backend whose ejection is over.
    let admitted = |t: &&Target| {
        !matches!(snapshot.backends[t.backend].health.admit(now, &snapshot.health), Admit::Ejected { .. })
    };
    let Some(first_ejected) = plan.iter().position(|t| !admitted(t)) else { return Cow::Borrowed(plan) };
    let mut usable: Vec<&Target> = plan[..first_ejected].to_vec();
    usable.extend(plan[first_ejected + 1..].iter().copied().filter(admitted));
    if !usable.is_empty() {
        return Cow::Owned(usable);
    }
    let least_recent = plan.iter().copied().min_by_key(|t| snapshot.backends[t.backend].health.last_failure());
    Cow::Owned(least_recent.into_iter().collect())
}

/// Feeds an attempt's outcome to the backend's passive health; logs and counts ejections once.
fn record_health(snapshot: &Snapshot, backend: &Backend, result: &Result<Box<Exchange>, GatewayError>) {
    let failed = match result {
        Ok(up) => snapshot.config.health.statuses.contains(&up.status),
        Err(e) => e.may_fall_back() && !matches!(e, GatewayError::BackendUnavailable(_)),
    };
    // The clock is read for a failure only: a success needs no time.
    let transition = if failed {
        backend.health.failure(crate::clock::unix_millis(), &snapshot.health)
    } else {
        backend.health.success()
    };
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

fn send_mock(mock: &mock::Mock, index: usize, prepared: Prepared, model: &str) -> Result<Box<Exchange>, GatewayError> {
    let body: Value = serde_json::from_slice(&prepared.body)
        .map_err(|e| GatewayError::BadRequest(format!("invalid JSON body: {e}")))?;
    let reply = mock::respond(prepared.endpoint, &body, model);
    Ok(Box::new(Exchange {
        status: reply.status,
        content_type: Some(Cow::Borrowed(reply.content_type)),
        passthrough: Default::default(),
        error_type: None,
        retry_hint_ms: None,
        body: Box::new(mock::MockBody::new(reply.content, mock.chunk_delay)),
        content_length: None,
        endpoint: Some(prepared.endpoint),
        pair: prepared.pair,
        response: prepared.response,
        api: Api::OpenAi,
        framing: Framing::Sse,
        strip_usage: prepared.strip_usage,
        backend: index,
        id_tag: None,
    }))
}

/// `traceparent`: the attempt's span, sent instead of the client's (traced requests).
fn send_http(
    backend: &Backend,
    index: usize,
    req: &Request,
    prepared: Prepared,
    traceparent: Option<&str>,
) -> Result<Box<Exchange>, GatewayError> {
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

/// An answer's content type, borrowed when it is one of those nearly every answer has.
fn shared_content_type(value: &str) -> Cow<'static, str> {
    const SHARED: [&str; 4] = [
        "application/json",
        "text/event-stream",
        "application/json; charset=utf-8",
        "text/event-stream; charset=utf-8",
    ];
    match SHARED.into_iter().find(|t| *t == value) {
        Some(shared) => Cow::Borrowed(shared),
        None => Cow::Owned(value.to_owned()),
    }
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
) -> Result<Box<Exchange>, GatewayError> {
    let provider = &*backend.provider;
    let client = backend
        .upstream
        .as_ref()
        .ok_or_else(|| GatewayError::BackendUnavailable(format!("backend \"{}\" is not ready", backend.name)))?;
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(24);
    let default_header = provider.default_header();
    let mut has_default = false;
    let connection_tokens = req.head.header("connection").unwrap_or("");
    // httparse admitted only visible ASCII and tabs in values: safe to write upstream as they are
    // (a value with other bytes is not text, and is not forwarded).
    for (name, value) in req.head.text_headers() {
        let named = |n: &str| n.eq_ignore_ascii_case(name);
        if never_forwarded(name)
            // Headers the operator sets: the client can neither override nor duplicate them.
            || provider.owns_header(name)
            || backend.headers.iter().any(|(n, _)| named(n))
            // Hop-by-hop headers the client listed in `Connection`.
            || (!connection_tokens.is_empty() && connection_tokens.split(',').any(|t| named(t.trim())))
            // A traced request continues the trace from this attempt's span.
            || (traceparent.is_some() && named("traceparent"))
        {
            continue;
        }
        has_default |= default_header.is_some_and(|(n, _)| named(n));
        headers.push((name, value));
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
    // (A byte search: `split_once` with a char pattern costs ~150 instructions on a short path.)
    let (path, path_query) = match path.bytes().position(|b| b == b'?') {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => (path, ""),
    };
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
        (true, _) => Cow::Borrowed(query),
        (false, true) => Cow::Borrowed(client.query()),
        (false, false) => Cow::Owned(format!("{}&{query}", client.query())),
    };
    let signed: &[u8] = match &body {
        SendBody::Bytes(b) => b,
        SendBody::Stream { prefix, .. } => prefix,
    };
    let outgoing = Outgoing {
        authority: client.authority(),
        base_path: client.base_path(),
        path,
        query: &sent_query,
        content_type,
        body: signed,
    };
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
    // The relayed headers in one block (two allocations), sized first; none at all when none is relayed.
    let (count, bytes) = response
        .headers
        .iter()
        .filter(|(name, _)| relayed_response_header(name))
        .fold((0, 0), |(n, b), (name, value)| (n + 1, b + name.len() + value.len()));
    let mut passthrough = match count {
        0 => crate::upstream::ResponseHeaders::default(),
        _ => crate::upstream::ResponseHeaders::with_capacity(count, bytes),
    };
    let retry_hint_ms = if response.status == 429 || response.status >= 500 {
        crate::retry::hint_ms(response.headers.iter())
    } else {
        None
    };
    for (name, value) in response.headers.iter() {
        if name == "content-type" {
            content_type = Some(shared_content_type(value));
        } else if name == "content-length" {
            content_length = value.parse().ok();
        } else if name == "x-amzn-errortype" {
            error_type = Some(value.to_owned());
        } else if relayed_response_header(name) {
            passthrough.push(name, value.as_bytes());
        }
    }
    Ok(Box::new(Exchange {
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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_forwarded_headers_are_found_by_length_in_any_case() {
        for name in NOT_FORWARDED {
            assert!(never_forwarded(name), "{name}");
            assert!(never_forwarded(&name.to_ascii_uppercase()), "{name}");
        }
        for name in ["Proxy-Anything", "proxy-x"] {
            assert!(never_forwarded(name), "{name}");
        }
        // As long as a listed name (and with its first and last byte), yet another name; the names clients
        // send; and longer than any listed name.
        let long = "x".repeat(40);
        for name in
            ["hast", "c", "", "content-type", "user-agent", "accept", "x-stainless-os", "anthropic-version", &long]
        {
            assert!(!never_forwarded(name), "{name}");
        }
    }
}
