//! The attempts a request made on its backends, in order, as sending (fallback, retries) reports them:
//! what the access log, the metrics and the spans say about each backend tried.

use std::time::Instant;

use crate::trace::{self, RequestTrace};

/// How one attempt on a backend went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Sent; no answer yet.
    InFlight,
    /// The response head arrived with this status.
    Answered(u16),
    /// Failed before a response head (`error.type`: `upstream_unreachable`, `upstream_timeout`…).
    Failed(&'static str),
    /// Not sent: the backend cannot take this request (`unsupported`).
    Skipped(&'static str),
    /// The client went away while it was in flight.
    Cancelled,
}

/// One attempt on one backend.
#[derive(Debug)]
pub struct Attempt {
    /// Index into `Snapshot::backends`.
    pub backend: usize,
    /// The model sent upstream (kept for traced requests only).
    pub model: Option<String>,
    pub started: Instant,
    pub ended: Option<Instant>,
    pub outcome: AttemptOutcome,
    /// Its client span (traced requests only; zero otherwise).
    pub span_id: [u8; 8],
}

/// The attempts `send` made, in order: the hook through which sending (fallback, retries) reports to
/// the access log, metrics and traces.
#[derive(Debug, Default)]
pub struct Attempts {
    list: Vec<Attempt>,
    /// The trace id when the request is traced.
    trace_id: Option<[u8; 16]>,
}

impl Attempts {
    pub fn new(trace: Option<&RequestTrace>) -> Attempts {
        Attempts { list: Vec::new(), trace_id: trace.map(|t| t.trace_id) }
    }

    /// Starts an attempt on `backend` with `model`. When the request is traced, returns the
    /// `traceparent` the upstream request must carry (this attempt's span as the parent).
    pub fn begin(&mut self, backend: usize, model: &str) -> Option<String> {
        let traced = self.trace_id;
        let span_id = if traced.is_some() { trace::new_span_id() } else { [0; 8] };
        self.list.push(Attempt {
            backend,
            model: traced.map(|_| model.to_string()),
            started: Instant::now(),
            ended: None,
            outcome: AttemptOutcome::InFlight,
            span_id,
        });
        traced.map(|trace_id| trace::traceparent(&trace_id, &span_id))
    }

    /// Ends the attempt in flight.
    pub fn end(&mut self, outcome: AttemptOutcome) {
        if let Some(a) = self.list.iter_mut().rev().find(|a| a.outcome == AttemptOutcome::InFlight) {
            a.outcome = outcome;
            a.ended = Some(Instant::now());
        }
    }

    /// Records a backend of the plan that was passed over without sending.
    pub fn skip(&mut self, backend: usize, reason: &'static str) {
        let now = Instant::now();
        self.list.push(Attempt {
            backend,
            model: None,
            started: now,
            ended: Some(now),
            outcome: AttemptOutcome::Skipped(reason),
            span_id: [0; 8],
        });
    }

    pub fn list(&self) -> &[Attempt] {
        &self.list
    }

    /// Requests sent upstream.
    pub fn sent(&self) -> usize {
        self.list.iter().filter(|a| !matches!(a.outcome, AttemptOutcome::Skipped(_))).count()
    }

    /// The attempt that speaks for the request: the last one sent (whose answer, if any, was relayed),
    /// else the last one considered.
    pub fn last(&self) -> Option<&Attempt> {
        self.last_index().map(|i| &self.list[i])
    }

    /// The index of [`Self::last`] in the list.
    pub(super) fn last_index(&self) -> Option<usize> {
        self.list
            .iter()
            .rposition(|a| !matches!(a.outcome, AttemptOutcome::Skipped(_)))
            .or_else(|| self.list.len().checked_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_record_outcomes_in_order_and_the_last_sent_speaks() {
        let mut a = Attempts::new(None);
        assert!(a.begin(0, "m").is_none(), "untraced: no traceparent");
        a.end(AttemptOutcome::Failed("upstream_unreachable"));
        a.skip(1, "unsupported");
        a.begin(2, "m");
        a.end(AttemptOutcome::Answered(200));
        assert_eq!(a.sent(), 2);
        assert_eq!(a.last().unwrap().backend, 2);
        assert_eq!(a.list()[0].outcome, AttemptOutcome::Failed("upstream_unreachable"));
        assert!(a.list().iter().all(|x| x.model.is_none()));
    }

    #[test]
    fn a_traced_attempt_carries_its_own_span_as_the_upstream_parent() {
        let t = RequestTrace { trace_id: [7; 16], span_id: [1; 8], parent: None, trace_state: String::new() };
        let mut a = Attempts::new(Some(&t));
        let tp = a.begin(0, "gpt").unwrap();
        let parsed = trace::parse_traceparent(&tp).unwrap();
        assert_eq!(parsed.trace_id, [7; 16]);
        assert_eq!(parsed.span_id, a.list()[0].span_id);
        assert!(parsed.sampled);
        assert_eq!(a.list()[0].model.as_deref(), Some("gpt"));
    }
}
