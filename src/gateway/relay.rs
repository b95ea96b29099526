//! Phase 6: the upstream response back to the client, in the client's schema.

use std::borrow::Cow;
use std::time::Instant;

use super::Exchange;
use crate::api::{Api, Endpoint};
use crate::error::{default_code, error_body, GatewayError};
use crate::providers::Provider;
use crate::server::Responder;
use crate::stream::StreamPipeline;
use crate::translate::{TranslateError, Usage};
use crate::upstream::{ResponseBody, ResponseHeaders};
use crate::usage;

/// What the response used and how it went, as far as the gateway could see.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Usage the upstream reported; `None` when it did not (the stream was cut, or never says).
    pub usage: Option<Usage>,
    /// Output tokens estimated from relayed content, for when `usage` is `None`.
    pub estimated_output: u64,
    /// The response was relayed as a stream.
    pub stream: bool,
    /// When the response head (or whole response) was handed to the client.
    pub first_byte: Option<Instant>,
    /// Streams: when the first content event was written to the client.
    pub first_token: Option<Instant>,
    /// The model the upstream said answered.
    pub response_model: Option<String>,
    /// Finish reasons, when `details` was asked.
    pub finish_reasons: Vec<String>,
    /// What went wrong after the upstream answered (`error.type`), if anything did.
    pub error: Option<&'static str>,
    /// The client went away before the response was complete.
    pub client_gone: bool,
}

/// Largest single SSE event the relay holds while waiting for its end.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Largest non-streamed upstream body the gateway buffers.
const MAX_UPSTREAM_BODY: u64 = 64 * 1024 * 1024;
/// The most a body's buffer is sized to before its bytes arrive.
const PRESIZED_BODY_AT_MOST: u64 = 1024 * 1024;

/// The client bytes of one relay step are first held in a buffer of this size.
const OUT_INITIAL: usize = 4096;

/// A wait for the upstream at least this long makes a stream slow: before its next wait, as before its
/// first, its empty buffers and the connection's idle stack pages are given back (`server/stack.rs`),
/// so 10,000 slow streams hold only what they use. Streams with events closer together keep them: a
/// release costs a system call, a page fault or two and the buffers' allocations.
const SLOW_WAIT_MS: u64 = 100;

/// One upstream read, and every further one that is ready without waiting, turned into the client's
/// bytes (`out`): what the upstream sent together leaves together. Returns whether the stream ended
/// (the upstream's end, or a failure that ended the client's stream with an error event).
fn relay_read(
    stream: &mut StreamPipeline,
    body: &mut dyn ResponseBody,
    out: &mut Vec<u8>,
    facts: &mut Outcome,
) -> bool {
    loop {
        match stream.read_from(body) {
            Ok(0) => {
                stream.finish(out);
                return true;
            }
            Ok(_) => stream.relay(out),
            // The client left (the watcher shut the upstream down): nobody reads an error event.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                facts.client_gone = true;
                return true;
            }
            Err(e) => {
                let message = format!("upstream stream interrupted: {e}");
                crate::warn_throttled!("{message}");
                facts.error = Some(if is_timeout(&e) { "upstream_idle_timeout" } else { "stream_interrupted" });
                stream.relay(out);
                stream.fail(502, &message, out);
                return true;
            }
        }
        if stream.pending_len() > MAX_EVENT_BYTES {
            stream.fail(502, &format!("an upstream event exceeded {MAX_EVENT_BYTES} bytes"), out);
            facts.error = Some("event_too_large");
            return true;
        }
        if body.finished() {
            stream.finish(out);
            return true;
        }
        if !body.buffered() {
            return false;
        }
    }
}

/// Relays the upstream response to a client that called `endpoint`. SSE is forwarded as it arrives
/// (one client write per upstream read); a failure mid-stream ends the stream with an error event in
/// the client's schema and a proper end of the body, never a fabricated `[DONE]`. An upstream answer
/// that refuses the request (a prompt Gemini blocked) is answered with the refusal's status. `details`:
/// also collect the finish reasons (traced requests).
pub fn relay(
    mut up: Box<Exchange>,
    provider: &dyn Provider,
    endpoint: Endpoint,
    model: &str,
    resp: &mut Responder,
    ids: &[(&str, &str)],
    details: bool,
) -> Outcome {
    let client = endpoint.client_api();
    let is_stream = up
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("text/event-stream") || c.starts_with("application/vnd.amazon.eventstream"));
    let secrets = provider.secrets();
    let masker = Masker::new(&secrets);
    mask_relayed_headers(&mut up.passthrough, &masker);
    let mut headers = relayed_headers(&up.passthrough, ids, 2);
    if is_stream && up.status < 300 {
        let translator: Option<Box<dyn crate::stream::StreamTranslate>> = match (up.pair, up.id_tag.take()) {
            (Some(pair), _) => Some(pair.stream(model, &up.response)),
            (None, Some(tag)) => Some(Box::new(super::responses::TagIds::new(tag))),
            (None, None) => None,
        };
        let mut stream = StreamPipeline::new(up.framing, up.api, client, translator, up.strip_usage);
        if details {
            stream.collect_finish_reasons();
        }
        let plain_headers = headers.len();
        headers.push(("content-type", "text/event-stream"));
        headers.push(("cache-control", "no-cache"));
        let mut facts = Outcome { stream: true, ..Outcome::default() };
        let outcome = |s: &StreamPipeline, mut facts: Outcome| {
            if facts.error.is_none() && s.failed() {
                facts.error = Some("stream_error");
            }
            Outcome {
                usage: s.usage().cloned(),
                estimated_output: s.content_events(),
                response_model: s.response_model().map(str::to_string),
                finish_reasons: s.finish_reasons().to_vec(),
                ..facts
            }
        };
        // A stream that may turn out to be a refusal keeps its head until the first client bytes.
        let mut started = !up.pair.is_some_and(|p| p.stream_may_refuse());
        if started && resp.start(up.status, &headers).is_err() {
            return Outcome { client_gone: true, ..facts };
        }
        // Sized for a typical upstream read's events at once (growing it step by step cost a
        // reallocation and a copy at each step, every stream).
        let mut out = Vec::with_capacity(OUT_INITIAL);
        // The last wait for the upstream was long, or this is the first (the time to the first token).
        let mut slow = true;
        loop {
            out.clear();
            // About to wait for the upstream: the client gets the head now rather than with the first event.
            let mut waits = started && !up.body.buffered();
            // A wait that may be long (for the first token, or after a long one) gives back idle memory
            // first; a peek tells whether it would wait at all. Bytes already arriving (a fast upstream's
            // first event right behind its head) leave with the head in one write, and nothing is released
            // for a wait that does not happen.
            if waits && slow && up.body.arriving() {
                waits = false;
                slow = false;
            }
            if waits {
                facts.first_byte.get_or_insert_with(Instant::now);
                if resp.flush().is_err() {
                    facts.client_gone = true;
                    return outcome(&stream, facts);
                }
                if slow {
                    stream.release_idle_memory();
                    up.body.release_idle_memory();
                    out = Vec::new();
                    resp.release_idle_memory();
                }
            }
            // The coarse clock (a few ms fine, ~8x cheaper to read) tells a 100 ms wait well enough.
            let waited_from = waits.then(crate::clock::coarse_millis);
            let ended = relay_read(&mut stream, &mut *up.body, &mut out, &mut facts);
            if let Some(from) = waited_from {
                slow = crate::clock::coarse_millis().saturating_sub(from) >= SLOW_WAIT_MS;
            }
            if !started {
                if let Some(refusal) = stream.refusal() {
                    headers.truncate(plain_headers);
                    headers.push(("content-type", "application/json"));
                    let body = error_body(client, refusal.status, &refusal.message, refusal.code.as_deref());
                    facts.first_byte = Some(Instant::now());
                    facts.error = Some("refused");
                    facts.client_gone = resp.send(refusal.status, &headers, &body).is_err();
                    return outcome(&stream, facts);
                }
                if out.is_empty() && !ended {
                    continue;
                }
                if resp.start(up.status, &headers).is_err() {
                    facts.client_gone = true;
                    return outcome(&stream, facts);
                }
                started = true;
            }
            // Stamped as the bytes are handed to the client (a write may return after the client read them).
            // (The clock is read only until both are known, not once per event.)
            if facts.first_byte.is_none() || facts.first_token.is_none() {
                let now = Instant::now();
                facts.first_byte.get_or_insert(now);
                if facts.first_token.is_none() && !out.is_empty() && stream.content_events() > 0 {
                    facts.first_token = Some(now);
                }
            }
            let written = if ended { resp.chunk_and_finish(&out) } else { resp.chunk(&out) };
            if written.is_err() {
                // The client went away: it is charged for what was generated until now.
                facts.client_gone = true;
                return outcome(&stream, facts);
            }
            if ended {
                return outcome(&stream, facts);
            }
        }
    }
    // Sized once from the upstream's content-length (bounded: it is only the upstream's word), so that
    // reading the body does not grow and copy it several times.
    let mut body = Vec::with_capacity(up.content_length.map_or(0, |n| n.min(PRESIZED_BODY_AT_MOST) as usize));
    let read = up.body.read_whole(&mut body, MAX_UPSTREAM_BODY);
    if let Err(e) = read {
        let (err, kind) = if is_timeout(&e) {
            (GatewayError::UpstreamTimeout(format!("upstream body timed out: {e}")), "upstream_idle_timeout")
        } else {
            (GatewayError::UpstreamUnreachable(format!("upstream body failed: {e}")), "upstream_unreachable")
        };
        let first_byte = Some(Instant::now());
        let client_gone = super::send_error(resp, client, &err, ids).is_err();
        return Outcome { error: Some(kind), first_byte, client_gone, ..Outcome::default() };
    }
    if up.status >= 400 {
        if let Cow::Owned(masked) = masker.mask(&body) {
            body = masked;
        }
    }
    let facts = if up.status < 400 {
        usage::facts_from_body(up.api, &body, details)
    } else {
        usage::BodyFacts { usage: Some(Usage::default()), ..usage::BodyFacts::default() }
    };
    let estimated_output = if facts.usage.is_none() { (body.len() as u64).div_ceil(4) } else { 0 };
    let mut status = up.status;
    let mut outcome = Outcome {
        usage: facts.usage,
        estimated_output,
        response_model: facts.model,
        finish_reasons: facts.finish_reasons,
        ..Outcome::default()
    };
    let out = if up.status == 401 || up.status == 403 {
        // The upstream refused the gateway's own credential. Its message can quote part of the
        // provider key ("Incorrect API key provided: sk-…abcd"): never relay it.
        crate::warn_throttled!("a backend refused the gateway's credential (status {})", up.status);
        let message = format!("the backend rejected the gateway's credentials (upstream status {})", up.status);
        error_body(client, up.status, &message, Some("backend_auth_failed"))
    } else if up.status >= 400 {
        let body = provider.family_error(up.status, up.error_type.as_deref(), body);
        let body = match up.pair {
            None => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
                    body
                } else {
                    // A non-JSON error (an HTML page from a proxy, say) is wrapped in the client's shape.
                    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).trim().to_string();
                    let message = format!("upstream returned {}: {text}", up.status);
                    error_body(client, up.status, &message, Some("upstream_error"))
                }
            }
            Some(pair) => pair.error(up.status, up.error_type.as_deref(), &body),
        };
        if client == Api::OpenAi {
            string_error_code(body, up.status)
        } else {
            body
        }
    } else {
        let body = match up.endpoint {
            Some(endpoint) => provider.finish_response(endpoint, body),
            None => body,
        };
        let translated = match up.pair {
            None => {
                let body = match &up.id_tag {
                    Some(tag) => super::responses::tag_ids(&body, tag).into_owned(),
                    None => body,
                };
                headers.push(("content-type", up.content_type.as_deref().unwrap_or("application/json")));
                outcome.first_byte = Some(Instant::now());
                outcome.client_gone = resp.send(up.status, &headers, &body).is_err();
                return outcome;
            }
            Some(pair) => pair.response(endpoint, &body, model, &up.response),
        };
        match translated {
            Ok(b) => b,
            Err(TranslateError::Refused { status: refused, code, message }) => {
                status = refused;
                error_body(client, refused, &message, Some(&code))
            }
            Err(e) => {
                let err =
                    GatewayError::UpstreamUnreachable(format!("the upstream response could not be translated: {e}"));
                outcome.error = Some("translation_failed");
                outcome.first_byte = Some(Instant::now());
                outcome.client_gone = super::send_error(resp, client, &err, ids).is_err();
                return outcome;
            }
        }
    };
    headers.push(("content-type", "application/json"));
    outcome.first_byte = Some(Instant::now());
    outcome.client_gone = resp.send(status, &headers, &out).is_err();
    outcome
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

/// The backend's credential never reaches a client, whatever the status and however the body is
/// relayed: the relayed upstream headers are masked. They are rebuilt only when one holds a secret.
pub(super) fn mask_relayed_headers(relayed: &mut ResponseHeaders, masker: &Masker) {
    let masked = |value: &str| match masker.mask(value.as_bytes()) {
        Cow::Owned(masked) => Some(masked),
        Cow::Borrowed(_) => None,
    };
    if relayed.iter().all(|(_, value)| masked(value).is_none()) {
        return;
    }
    let mut rebuilt = ResponseHeaders::default();
    for (name, value) in relayed.iter() {
        rebuilt.push(name, &masked(value).unwrap_or_else(|| value.as_bytes().to_vec()));
    }
    *relayed = rebuilt;
}

/// The relayed upstream headers (masked first: [`mask_relayed_headers`]), then the gateway's own
/// (`ids`), with room for `more`. The gateway's own limits, when any applied, speak for x-ratelimit-*.
pub(super) fn relayed_headers<'a>(
    relayed: &'a ResponseHeaders,
    ids: &[(&'a str, &'a str)],
    more: usize,
) -> Vec<(&'a str, &'a str)> {
    let own_limits = ids.iter().any(|(n, _)| n.starts_with("x-ratelimit-"));
    let mut headers = Vec::with_capacity(relayed.len() + ids.len() + more);
    headers.extend(relayed.iter().filter(|(n, _)| !(own_limits && n.starts_with("x-ratelimit-"))));
    headers.extend_from_slice(ids);
    headers
}

/// Shortest secret masked: shorter strings occur in ordinary text, and no real credential is that short.
const MIN_SECRET_LEN: usize = 8;

/// What a masked secret is replaced by.
const MASK: &[u8] = b"[redacted]";

/// Masks a backend's secrets: every occurrence is replaced by `[redacted]`, as it is, JSON-escaped
/// (`/` as `\/`) and percent-encoded, the forms an upstream may quote it in. Built for every relayed
/// response: a secret is borrowed as it is, and its other forms are built only when they differ from it
/// (an API key of letters, digits, `-` and `_` has one form).
pub struct Masker<'s> {
    /// Every form of every secret, longest first.
    needles: Vec<Cow<'s, [u8]>>,
}

impl<'s> Masker<'s> {
    pub fn new<S: AsRef<str>>(secrets: &'s [S]) -> Masker<'s> {
        let mut needles: Vec<Cow<'s, [u8]>> = Vec::new();
        let mut add = |form: Cow<'s, [u8]>| {
            if !needles.contains(&form) {
                needles.push(form);
            }
        };
        for secret in secrets.iter().map(|s| s.as_ref()).filter(|s| s.len() >= MIN_SECRET_LEN) {
            add(Cow::Borrowed(secret.as_bytes()));
            if secret.contains('/') {
                add(Cow::Owned(secret.replace('/', "\\/").into_bytes()));
            }
            if !secret.bytes().all(crate::digits::is_unreserved) {
                add(Cow::Owned(crate::digits::percent_encode(secret.as_bytes()).into_bytes()));
            }
        }
        // Longest first, so a longer form is masked whole before a shorter one could split it.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Masker { needles }
    }

    /// `bytes` with the secrets masked; borrowed when none occurs.
    pub fn mask<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out = Cow::Borrowed(bytes);
        for needle in &self.needles {
            if let Some(replaced) = replace_all(&out, needle) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }
}

/// `haystack` with each `needle` replaced by [`MASK`], or `None` when there is none.
fn replace_all(haystack: &[u8], needle: &[u8]) -> Option<Vec<u8>> {
    let find = |from: usize| {
        haystack[from..].windows(needle.len()).position(|w| w[0] == needle[0] && w == needle).map(|i| from + i)
    };
    let mut at = find(0)?;
    let mut out = Vec::with_capacity(haystack.len());
    let mut copied = 0;
    loop {
        out.extend_from_slice(&haystack[copied..at]);
        out.extend_from_slice(MASK);
        copied = at + needle.len();
        match find(copied) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&haystack[copied..]);
    Some(out)
}

/// An OpenAI-shaped error body whose `error.code` is a string, as the spec we implement types it: a
/// number becomes its text, `null` (what OpenAI itself often sends) or another value the status's
/// code. Other bodies are returned as they are.
fn string_error_code(body: Vec<u8>, status: u16) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else { return body };
    let Some(code) = value.get_mut("error").and_then(|e| e.as_object_mut()).and_then(|e| e.get_mut("code")) else {
        return body;
    };
    *code = match code {
        serde_json::Value::String(_) => return body,
        serde_json::Value::Number(n) => serde_json::Value::String(n.to_string()),
        _ => serde_json::Value::String(default_code(status).to_string()),
    };
    serde_json::to_vec(&value).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_every_form_and_only_secrets() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let body = format!(
            r#"{{"error":{{"message":"key {secret} and {} and {} refused; short xyz kept"}}}}"#,
            secret.replace('/', "\\/"),
            "wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY"
        );
        let masked = Masker::new(&[secret, "xyz"]).mask(body.as_bytes()).into_owned();
        let text = String::from_utf8(masked).unwrap();
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert_eq!(text.matches("[redacted]").count(), 3, "{text}");
        assert!(text.contains("short xyz kept"), "secrets under 8 bytes are not masked: {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
        assert!(matches!(Masker::new(&[secret]).mask(b"nothing here"), Cow::Borrowed(_)));
        assert_eq!(&*Masker::new(&["sk-abcdefgh"]).mask(b"sk-abcdefgh sk-abcdefgh"), b"[redacted] [redacted]");
    }

    #[test]
    fn openai_error_codes_become_strings() {
        let code = |body: &str, status| -> serde_json::Value {
            serde_json::from_slice::<serde_json::Value>(&string_error_code(body.as_bytes().to_vec(), status)).unwrap()
                ["error"]["code"]
                .clone()
        };
        assert_eq!(code(r#"{"error":{"message":"m","code":null}}"#, 400), "invalid_request");
        assert_eq!(code(r#"{"error":{"message":"m","code":400}}"#, 400), "400");
        assert_eq!(code(r#"{"error":{"message":"m","code":"x"}}"#, 400), "x");
        let untouched = br#"{"error":{"message":"m"}}"#.to_vec();
        assert_eq!(string_error_code(untouched.clone(), 400), untouched);
        assert_eq!(string_error_code(b"not json".to_vec(), 500), b"not json");
    }
}
