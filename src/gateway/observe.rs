//! Phase 8, record: what a request did — who called, which model and route, which backends were tried
//! and how each answered, timings, bytes and tokens — gathered as the phases run ([`Observation`]),
//! then reported once when it ends: the metrics, the access log line and, when the request is traced,
//! its spans. Nothing here touches a socket.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::attempts::{AttemptOutcome, Attempts};
use super::Outcome;
use crate::accesslog::{self, JsonLine};
use crate::api::Endpoint;
use crate::metrics::{self, GenAiLabels, GenAiSample, Label, TimeoutPhase, EMPTY};
use crate::server::{Request, Responder};
use crate::snapshot::{Client, Snapshot};
use crate::trace::{self, RequestTrace, Span, SpanKind, Value};

/// Model names longer than this are cut in the access log and spans.
const MAX_LOGGED_MODEL: usize = 256;

fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The values of `gen_ai.operation.name`.
const OPERATIONS: [&str; 4] = ["chat", "text_completion", "embeddings", "count_tokens"];

/// An endpoint's place in [`OPERATIONS`].
fn operation(e: Endpoint) -> usize {
    match e {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => 0,
        Endpoint::Completions => 1,
        Endpoint::Embeddings => 2,
        Endpoint::CountTokens | Endpoint::ResponsesInputTokens => 3,
    }
}

/// `gen_ai.operation.name` of an endpoint.
pub fn operation_name(e: Endpoint) -> &'static str {
    OPERATIONS[operation(e)]
}

/// [`operation_name`]'s metric label, interned once.
fn operation_label(e: Endpoint) -> Label {
    static LABELS: std::sync::OnceLock<[Label; 4]> = std::sync::OnceLock::new();
    LABELS.get_or_init(|| OPERATIONS.map(metrics::label))[operation(e)]
}

/// What one request did, filled in by the phases.
pub struct Observation<'s> {
    received: Instant,
    pub trace: Option<RequestTrace>,
    /// A proxied operation (gen_ai metrics are recorded for these only).
    pub operation: Option<Endpoint>,
    pub client: Option<&'s str>,
    /// Its metric label.
    client_label: Label,
    /// The model the client asked for.
    pub model: Option<String>,
    /// Its metric label (bounded; see `metrics::labels`).
    pub model_label: Label,
    /// The pattern of the route that matched.
    pub route: Option<&'s str>,
    /// The client asked for a stream.
    pub stream: bool,
    /// The limits charged for the request.
    pub limits: Vec<&'s str>,
    /// The limit that rejected it.
    pub limited_by: Option<&'s str>,
    pub attempts: Attempts,
    /// Set once the response was relayed.
    pub outcome: Option<Outcome>,
    /// `error.type` of a gateway error the request ended with.
    pub error: Option<&'static str>,
    /// The client went away before its answer.
    pub cancelled: bool,
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl<'s> Observation<'s> {
    /// The client the request authenticated as (`None`: the gateway is open); returns its name
    /// (`anonymous` for an open gateway's).
    pub fn set_client(&mut self, client: Option<&'s Client>) -> &'s str {
        static ANONYMOUS: std::sync::OnceLock<Label> = std::sync::OnceLock::new();
        let (name, label) = match client {
            Some(c) => (c.name.as_str(), c.label),
            None => ("anonymous", *ANONYMOUS.get_or_init(|| metrics::label("anonymous"))),
        };
        self.client = Some(name);
        self.client_label = label;
        name
    }

    /// Starts observing `req` (its head completed at `req.received`); decides whether it is traced.
    pub fn new(req: &Request) -> Observation<'s> {
        let received = req.received;
        // Off, tracing costs this one check: the headers are not even looked up.
        let trace = if trace::enabled() {
            trace::begin(req.head.header("traceparent"), req.head.header("tracestate"))
        } else {
            None
        };
        let attempts = Attempts::new(trace.as_ref());
        Observation {
            received,
            trace,
            operation: None,
            client: None,
            client_label: EMPTY,
            model: None,
            model_label: EMPTY,
            route: None,
            stream: false,
            limits: Vec::new(),
            limited_by: None,
            attempts,
            outcome: None,
            error: None,
            cancelled: false,
        }
    }

    /// `t` in wall-clock nanoseconds since the Unix epoch.
    fn nanos_at(&self, f: &Facts, t: Instant) -> u64 {
        f.received_unix_nanos + t.saturating_duration_since(self.received).as_nanos() as u64
    }

    /// Reports the request: metrics, the access log line, the trace's spans. Out of line, as are the
    /// phases before the relay (`route`, `admit`, `send`): inlined, their locals widen the handler's
    /// frame, which stays on the stack while a stream waits (`server/stack.rs`).
    #[inline(never)]
    pub fn finish(mut self, snapshot: &Snapshot, req: &Request, resp: &Responder, request_id: &str) {
        self.report(snapshot, req, resp.status(), resp.bytes_sent(), request_id);
    }

    /// [`finish`](Self::finish) with what the responder says passed in: `status` (0: nothing was
    /// sent) and the body bytes written. By reference: taken by value, the 416-byte observation was
    /// copied into this function's frame for every request.
    pub fn report(&mut self, snapshot: &Snapshot, req: &Request, sent_status: u16, bytes_out: u64, request_id: &str) {
        let end = Instant::now();
        let duration = end.saturating_duration_since(self.received);
        let answered = self.outcome.is_some();
        let outcome = self.outcome.take().unwrap_or_default();
        let cancelled = self.cancelled || outcome.client_gone;
        // Nothing was sent: the client went away first (nginx's 499), or the handler failed to answer.
        let status = match sent_status {
            0 if cancelled => 499,
            0 => 500,
            s => s,
        };
        let error: Option<Cow<'static, str>> = self
            .error
            .or(outcome.error)
            .map(Cow::Borrowed)
            .or_else(|| cancelled.then_some(Cow::Borrowed("cancelled")))
            .or_else(|| (status >= 400).then(|| Cow::Owned(status.to_string())));
        let last = self.attempts.last();
        let backend = last.and_then(|a| snapshot.backends.get(a.backend));

        // Metrics.
        let client = self.client_label;
        let error_label = error.as_deref().map_or(EMPTY, metrics::label);
        let ttft = outcome.first_token.map(|t| t.saturating_duration_since(self.received));
        let output_tokens = outcome.usage.as_ref().map_or(outcome.estimated_output, |u| u.output_tokens);
        if let Some(op) = self.operation {
            let labels = GenAiLabels {
                operation: operation_label(op),
                provider: backend.map_or(EMPTY, |b| b.provider_label),
                request_model: self.model_label,
                // Most answers name the model asked for: its label is known (a name past the cap on model
                // label lengths is an exact route's own label, but as an answer's model it overflows).
                response_model: match outcome.response_model.as_deref() {
                    Some(m) if Some(m) == self.model.as_deref() && m.len() <= metrics::labels::MAX_MODEL_BYTES => {
                        self.model_label
                    }
                    m => m.map_or(EMPTY, metrics::model_label),
                },
                client,
                backend: backend.map_or(EMPTY, |b| b.backend_label),
                error: error_label,
            };
            let tpot = match (outcome.first_token, &error) {
                (Some(first), None) if outcome.stream && output_tokens > 1 => {
                    Some(end.saturating_duration_since(first).as_secs_f64() / (output_tokens - 1) as f64)
                }
                _ => None,
            };
            let usage_unknown = answered && outcome.usage.is_none();
            let estimated_tokens = if usage_unknown {
                crate::ratelimit::estimate_input_tokens(req.body.len()) + outcome.estimated_output
            } else {
                0
            };
            metrics::record_request(
                &labels,
                &GenAiSample {
                    status,
                    duration: duration.as_secs_f64(),
                    ttft: ttft.map(|t| t.as_secs_f64()),
                    tpot,
                    usage: outcome.usage.as_ref(),
                    usage_unknown,
                    estimated_tokens,
                },
            );
        } else {
            metrics::count_request(client, status, error_label);
        }
        if outcome.error == Some("upstream_idle_timeout") {
            if let Some(b) = backend {
                metrics::count_upstream_timeout(&b.name, TimeoutPhase::Idle);
            }
        }

        let log = accesslog::enabled();
        // The wall clock at `received`, for the access log line and the spans: two clock reads that
        // metrics, which use `Instant`s only, do not need.
        let received_unix_nanos = if log || self.trace.is_some() {
            unix_nanos(SystemTime::now()).saturating_sub(self.received.elapsed().as_nanos() as u64)
        } else {
            0
        };
        let facts = Facts {
            status,
            error: error.as_deref(),
            cancelled,
            duration,
            ttft,
            end,
            received_unix_nanos,
            bytes_out,
            outcome: &outcome,
        };
        if log {
            accesslog::write(&self.access_line(snapshot, req, request_id, &facts));
        }
        if let Some(trace) = &self.trace {
            trace::submit(&self.spans(trace, snapshot, req, request_id, &facts));
        }
    }

    /// The access log line: never a key, never message content.
    fn access_line(&self, snapshot: &Snapshot, req: &Request, request_id: &str, f: &Facts) -> Vec<u8> {
        let o = f.outcome;
        let mut line = JsonLine::new();
        line.timestamp("ts", f.received_unix_nanos / 1_000_000)
            .str("request_id", request_id)
            .display("peer", req.peer)
            .opt_str("client", self.client)
            .str("method", req.head.method())
            .str("path", req.head.path())
            .opt_str("operation", self.operation.map(operation_name))
            .opt_str("model", self.model.as_deref().map(|m| truncated(m, MAX_LOGGED_MODEL)))
            .opt_str("route", self.route)
            .bool("stream", self.stream)
            .num("status", u64::from(f.status))
            .opt_str("error_type", f.error)
            .bool("cancelled", f.cancelled)
            .num("attempts", self.attempts.sent() as u64)
            .array("backends", |items| {
                for a in self.attempts.list() {
                    items.object(|entry| {
                        let name = snapshot.backends.get(a.backend).map_or("", |b| b.name.as_str());
                        entry.str("backend", name);
                        match a.outcome {
                            AttemptOutcome::Answered(s) => entry.str("outcome", "answered").num("status", u64::from(s)),
                            AttemptOutcome::Failed(e) => entry.str("outcome", "failed").str("error_type", e),
                            AttemptOutcome::Skipped(r) => entry.str("outcome", "skipped").str("error_type", r),
                            AttemptOutcome::Cancelled => entry.str("outcome", "cancelled"),
                            AttemptOutcome::InFlight => entry.str("outcome", "in_flight"),
                        };
                        let took = a.ended.unwrap_or(f.end).saturating_duration_since(a.started);
                        entry.millis("ms", Some(took));
                    });
                }
            })
            .opt_str(
                "backend",
                self.attempts.last().and_then(|a| snapshot.backends.get(a.backend)).map(|b| b.name.as_str()),
            )
            .opt_str("response_model", o.response_model.as_deref().map(|m| truncated(m, MAX_LOGGED_MODEL)))
            .num("bytes_in", req.body.len() as u64)
            .num("bytes_out", f.bytes_out)
            .millis("duration_ms", Some(f.duration))
            .millis("ttfb_ms", o.first_byte.map(|t| t.saturating_duration_since(self.received)))
            .millis("ttft_ms", f.ttft);
        match &o.usage {
            Some(u) => {
                line.object("tokens", |t| {
                    t.num("input", u.prompt_tokens())
                        .num("output", u.output_tokens)
                        .num("cached", u.cache_read_input_tokens)
                        .num("cache_creation", u.cache_creation_input_tokens)
                        .num("reasoning", u.reasoning_tokens);
                });
            }
            None => {
                line.raw("tokens", "null");
            }
        }
        if o.usage.is_none() && o.estimated_output > 0 {
            line.num("estimated_output_tokens", o.estimated_output);
        }
        line.array("limits", |items| {
            for l in &self.limits {
                items.str(l);
            }
        })
        .opt_str("limited_by", self.limited_by)
        .opt_str("trace_id", self.trace.as_ref().map(|t| trace::hex(&t.trace_id)).as_deref());
        line.finish()
    }

    /// The server span and one client span per attempt sent, borrowing what they describe.
    fn spans<'a>(
        &'a self,
        t: &'a RequestTrace,
        snapshot: &'a Snapshot,
        req: &'a Request,
        request_id: &'a str,
        f: &'a Facts,
    ) -> Vec<Span<'a>> {
        let o = f.outcome;
        let op = self.operation.map(operation_name);
        let mut response: Vec<(&'static str, Value<'a>)> = Vec::with_capacity(7);
        if let Some(m) = &o.response_model {
            response.push(("gen_ai.response.model", Value::str(truncated(m, MAX_LOGGED_MODEL))));
        }
        if let Some(u) = &o.usage {
            response.push(("gen_ai.usage.input_tokens", Value::Int(u.prompt_tokens() as i64)));
            response.push(("gen_ai.usage.output_tokens", Value::Int(u.output_tokens as i64)));
            for (key, n) in [
                ("gen_ai.usage.cache_read.input_tokens", u.cache_read_input_tokens),
                ("gen_ai.usage.cache_creation.input_tokens", u.cache_creation_input_tokens),
                ("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens),
            ] {
                if n > 0 {
                    response.push((key, Value::Int(n as i64)));
                }
            }
        }
        if !o.finish_reasons.is_empty() {
            response.push(("gen_ai.response.finish_reasons", Value::StrArray(&o.finish_reasons)));
        }
        let last = self.attempts.last_index();
        let mut spans = Vec::with_capacity(1 + self.attempts.list().len());

        let mut attrs: Vec<(&'static str, Value<'a>)> = Vec::with_capacity(16 + response.len());
        attrs.push(("http.request.method", Value::str(req.head.method())));
        attrs.push(("url.path", Value::str(req.head.path())));
        attrs.push(("http.response.status_code", Value::Int(i64::from(f.status))));
        attrs.push(("switchyard.request_id", Value::str(request_id)));
        if let Some(op) = op {
            attrs.push(("gen_ai.operation.name", Value::str(op)));
        }
        if let Some(m) = &self.model {
            attrs.push(("gen_ai.request.model", Value::str(truncated(m, MAX_LOGGED_MODEL))));
        }
        if let Some(b) = self.attempts.last().and_then(|a| snapshot.backends.get(a.backend)) {
            attrs.push(("gen_ai.provider.name", Value::str(b.provider.genai_provider_name())));
        }
        if let Some(c) = self.client {
            attrs.push(("switchyard.client", Value::str(c)));
        }
        if let Some(r) = self.route {
            attrs.push(("switchyard.route", Value::str(r)));
        }
        attrs.push(("switchyard.attempts", Value::Int(self.attempts.sent() as i64)));
        if f.cancelled {
            attrs.push(("switchyard.cancelled", Value::Bool(true)));
        }
        attrs.extend(response.iter().cloned());
        if let Some(e) = f.error {
            attrs.push(("error.type", Value::str(e)));
        }
        let server_failed = f.status >= 500 || o.error.is_some();
        spans.push(Span {
            trace_id: t.trace_id,
            span_id: t.span_id,
            parent_span_id: t.parent,
            trace_state: &t.trace_state,
            name: Cow::Owned(format!("{} {}", req.head.method(), req.head.path())),
            kind: SpanKind::Server,
            start_unix_nanos: f.received_unix_nanos,
            end_unix_nanos: self.nanos_at(f, f.end),
            attributes: attrs,
            error: server_failed.then(|| Cow::Borrowed(f.error.unwrap_or("error"))),
        });

        for (i, a) in self.attempts.list().iter().enumerate() {
            if matches!(a.outcome, AttemptOutcome::Skipped(_)) {
                continue;
            }
            let Some(backend) = snapshot.backends.get(a.backend) else { continue };
            let upstream_model = a.model.as_deref().map(|m| truncated(m, MAX_LOGGED_MODEL));
            let relayed = last == Some(i) && matches!(a.outcome, AttemptOutcome::Answered(_));
            let mut attrs: Vec<(&'static str, Value<'a>)> = Vec::with_capacity(8 + response.len());
            if let Some(op) = op {
                attrs.push(("gen_ai.operation.name", Value::str(op)));
            }
            attrs.push(("gen_ai.provider.name", Value::str(backend.provider.genai_provider_name())));
            if let Some(m) = upstream_model {
                attrs.push(("gen_ai.request.model", Value::str(m)));
            }
            attrs.push(("switchyard.backend", Value::str(&backend.name)));
            if let Some(up) = &backend.upstream {
                attrs.push(("server.address", Value::str(up.authority())));
            }
            let failure: Option<Cow<'a, str>> = match a.outcome {
                AttemptOutcome::Answered(s) => {
                    attrs.push(("http.response.status_code", Value::Int(i64::from(s))));
                    (s >= 400).then(|| Cow::Owned(s.to_string()))
                }
                AttemptOutcome::Failed(e) => Some(Cow::Borrowed(e)),
                AttemptOutcome::Cancelled => Some(Cow::Borrowed("cancelled")),
                AttemptOutcome::InFlight | AttemptOutcome::Skipped(_) => None,
            };
            let failure = failure.or_else(|| if relayed { o.error.map(Cow::Borrowed) } else { None });
            if relayed {
                attrs.extend(response.iter().cloned());
            }
            if let Some(e) = &failure {
                attrs.push(("error.type", Value::Str(e.clone())));
            }
            // The relayed attempt lasts until its body was read; the others end at their answer.
            let ended = if relayed { f.end } else { a.ended.unwrap_or(f.end) };
            spans.push(Span {
                trace_id: t.trace_id,
                span_id: a.span_id,
                parent_span_id: Some(t.span_id),
                trace_state: &t.trace_state,
                name: match (op, upstream_model) {
                    (Some(op), Some(m)) => Cow::Owned(format!("{op} {m}")),
                    (Some(op), None) => Cow::Borrowed(op),
                    _ => Cow::Borrowed("upstream"),
                },
                kind: SpanKind::Client,
                start_unix_nanos: self.nanos_at(f, a.started),
                end_unix_nanos: self.nanos_at(f, ended),
                attributes: attrs,
                error: failure,
            });
        }
        spans
    }
}

/// What `finish` worked out, for the line and the spans.
struct Facts<'a> {
    status: u16,
    error: Option<&'a str>,
    cancelled: bool,
    duration: Duration,
    ttft: Option<Duration>,
    end: Instant,
    /// The wall clock at the request's arrival (0 when neither the access log nor a trace is on).
    received_unix_nanos: u64,
    bytes_out: u64,
    outcome: &'a Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_models_are_cut_at_a_character_boundary() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("éé", 3), "é");
    }
}
