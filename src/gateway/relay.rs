//! Phase 6: the upstream response back to the client, in the client's schema.

use std::io::Read;

use super::{Exchange, Translation};
use crate::error::{error_body, ClientSchema, GatewayError};
use crate::server::Responder;
use crate::translate::{anthropic_openai, openai_anthropic, Usage};
use crate::usage::{self, StreamUsage};

/// What the response used, as far as the gateway could see.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Usage the upstream reported; `None` when it did not (the stream was cut, or never says).
    pub usage: Option<Usage>,
    /// Output tokens estimated from relayed content, for when `usage` is `None`.
    pub estimated_output: u64,
}

/// Largest single SSE event the relay holds while waiting for its end.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Largest non-streamed upstream body the gateway buffers.
const MAX_UPSTREAM_BODY: u64 = 64 * 1024 * 1024;

/// The per-pair stream translator, or none for a passthrough.
enum StreamTranslation {
    Passthrough,
    OpenAiAnthropic(Box<openai_anthropic::StreamTranslator>),
    AnthropicOpenAi(Box<anthropic_openai::StreamTranslator>),
}

impl StreamTranslation {
    fn new(translation: &Translation, model: &str) -> StreamTranslation {
        match translation {
            Translation::Passthrough => StreamTranslation::Passthrough,
            Translation::OpenAiAnthropic(o) => StreamTranslation::OpenAiAnthropic(Box::new(
                openai_anthropic::StreamTranslator::new(model, o.created, o),
            )),
            Translation::AnthropicOpenAi(o) => StreamTranslation::AnthropicOpenAi(Box::new(
                anthropic_openai::StreamTranslator::new(model, o.created, o),
            )),
        }
    }

    /// Takes the `n` bytes just read into `tap` and appends what the client should receive to `out`.
    fn relay(&mut self, tap: &mut StreamUsage, n: usize, out: &mut Vec<u8>) {
        match self {
            // Only complete events are forwarded, so a stream that fails mid-event still ends with a
            // well-formed error event.
            StreamTranslation::Passthrough => tap.drain(Some(out)),
            StreamTranslation::OpenAiAnthropic(t) => {
                t.push(tap.fresh(n), out);
                tap.drain(None);
            }
            StreamTranslation::AnthropicOpenAi(t) => {
                t.push(tap.fresh(n), out);
                tap.drain(None);
            }
        }
    }

    /// At the upstream's end of stream: the last bytes for the client; `false` if the stream was cut
    /// inside an event (the translators report such an end themselves).
    fn finish(&mut self, tap: &mut StreamUsage, out: &mut Vec<u8>) -> bool {
        match self {
            StreamTranslation::Passthrough => tap.finish(out),
            StreamTranslation::OpenAiAnthropic(t) => {
                t.finish(out);
                true
            }
            StreamTranslation::AnthropicOpenAi(t) => {
                t.finish(out);
                true
            }
        }
    }
}

/// Ends a started stream with an error event in the client's schema and a proper end of the body.
fn end_with_error(resp: &mut Responder, client: ClientSchema, message: &str) {
    if resp.chunk(&stream_error_event(client, message)).is_ok() {
        let _ = resp.finish();
    }
}

/// Relays the upstream response. SSE is forwarded as it arrives (one client write per upstream read);
/// a failure mid-stream ends the stream with an error event in the client's schema and a proper end of
/// the body, never a fabricated `[DONE]`.
pub fn relay(
    mut up: Exchange,
    client: ClientSchema,
    model: &str,
    resp: &mut Responder,
    ids: &[(&str, &str)],
) -> Outcome {
    let is_sse = up.content_type.as_deref().is_some_and(|c| c.starts_with("text/event-stream"));
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(up.passthrough.len() + ids.len() + 2);
    // The gateway's own limits, when any applied, speak for x-ratelimit-*.
    let own_limits = ids.iter().any(|(n, _)| n.starts_with("x-ratelimit-"));
    headers.extend(
        up.passthrough
            .iter()
            .filter(|(n, _)| !(own_limits && n.starts_with("x-ratelimit-")))
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    headers.extend_from_slice(ids);
    if is_sse && up.status < 300 {
        let mut translator = StreamTranslation::new(&up.translation, model);
        headers.push(("content-type", "text/event-stream"));
        headers.push(("cache-control", "no-cache"));
        let mut tap = StreamUsage::new(up.wire, up.strip_usage);
        let outcome =
            |tap: &StreamUsage| Outcome { usage: tap.usage().cloned(), estimated_output: tap.content_events() };
        if resp.start(up.status, &headers).is_err() {
            return Outcome::default();
        }
        let mut out = Vec::new();
        loop {
            out.clear();
            match tap.read_from(&mut up.body) {
                Ok(0) => {
                    if !translator.finish(&mut tap, &mut out) {
                        out.extend_from_slice(&stream_error_event(client, "the upstream stream ended inside an event"));
                    }
                    if resp.chunk(&out).is_ok() {
                        let _ = resp.finish();
                    }
                    return outcome(&tap);
                }
                Ok(n) => {
                    translator.relay(&mut tap, n, &mut out);
                    if resp.chunk(&out).is_err() {
                        // The client went away: it is charged for what was generated until now.
                        return outcome(&tap);
                    }
                    if tap.pending_len() > MAX_EVENT_BYTES {
                        end_with_error(resp, client, &format!("an upstream event exceeded {MAX_EVENT_BYTES} bytes"));
                        return outcome(&tap);
                    }
                }
                Err(e) => {
                    let message = format!("upstream stream interrupted: {e}");
                    crate::warn_throttled!("{message}");
                    end_with_error(resp, client, &message);
                    return outcome(&tap);
                }
            }
        }
    }
    let mut body = Vec::new();
    let read = (&mut up.body).take(MAX_UPSTREAM_BODY).read_to_end(&mut body).and_then(|_| {
        let mut probe = [0u8; 1];
        match up.body.read(&mut probe)? {
            0 => Ok(()),
            _ => Err(std::io::Error::other(format!("the upstream body exceeds {MAX_UPSTREAM_BODY} bytes"))),
        }
    });
    if let Err(e) = read {
        let err = if e.kind() == std::io::ErrorKind::TimedOut {
            GatewayError::UpstreamTimeout(format!("upstream body timed out: {e}"))
        } else {
            GatewayError::UpstreamUnreachable(format!("upstream body failed: {e}"))
        };
        let _ = super::send_error(resp, client, &err, ids);
        return Outcome::default();
    }
    let usage = if up.status < 400 { usage::from_body(up.wire, &body) } else { Some(Usage::default()) };
    let estimated_output = if usage.is_none() { (body.len() as u64).div_ceil(4) } else { 0 };
    let outcome = Outcome { usage, estimated_output };
    let out = if up.status == 401 || up.status == 403 {
        // The upstream refused the gateway's own credential. Its message can quote part of the
        // provider key ("Incorrect API key provided: sk-…abcd"): never relay it.
        crate::warn_throttled!("a backend refused the gateway's credential (status {})", up.status);
        let message = format!("the backend rejected the gateway's credentials (upstream status {})", up.status);
        error_body(client, up.status, &message, Some("backend_auth_failed"))
    } else if up.status >= 400 {
        match &up.translation {
            Translation::Passthrough => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
                    body
                } else {
                    // A non-JSON error (an HTML page from a proxy, say) is wrapped in the client's shape.
                    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).trim().to_string();
                    let message = format!("upstream returned {}: {text}", up.status);
                    error_body(client, up.status, &message, Some("upstream_error"))
                }
            }
            Translation::OpenAiAnthropic(_) => openai_anthropic::error(up.status, &body),
            Translation::AnthropicOpenAi(_) => anthropic_openai::error(up.status, &body),
        }
    } else {
        let translated = match &up.translation {
            Translation::Passthrough => {
                headers.push(("content-type", up.content_type.as_deref().unwrap_or("application/json")));
                let _ = resp.send(up.status, &headers, &body);
                return outcome;
            }
            Translation::OpenAiAnthropic(o) => openai_anthropic::response(&body, model, o),
            Translation::AnthropicOpenAi(o) => anthropic_openai::response(&body, model, o),
        };
        match translated {
            Ok(b) => b,
            Err(e) => {
                let err =
                    GatewayError::UpstreamUnreachable(format!("the upstream response could not be translated: {e}"));
                let _ = super::send_error(resp, client, &err, ids);
                return outcome;
            }
        }
    };
    headers.push(("content-type", "application/json"));
    let _ = resp.send(up.status, &headers, &out);
    outcome
}

/// An SSE error event in the client's schema.
pub fn stream_error_event(client: ClientSchema, message: &str) -> Vec<u8> {
    let body = error_body(client, 502, message, Some("upstream_stream_error"));
    let mut out = Vec::with_capacity(body.len() + 24);
    crate::sse::write_event(&mut out, (client == ClientSchema::Anthropic).then_some("error"), &body);
    out
}
