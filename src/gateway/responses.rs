//! Responses that backends store, and the calls on them (`GET/DELETE /v1/responses/{id}`,
//! `POST …/cancel`, `GET …/input_items`): each goes to the backend that created the response.
//!
//! The backend is written into the id the client receives, so any instance of the gateway (after a
//! restart too) finds it without shared state: a passed-through response `resp_abc…` reaches the client
//! as `resp_<tag>_abc…`, where `<tag>` is eight hex digits of the SHA-256 of the backend's name. The
//! tag is removed again wherever the client sends an id back — the by-id paths and
//! `previous_response_id`, which also pins the request to that backend when its route has it. A bounded
//! map would forget ids on restart, differ between instances and need eviction; the id costs nine
//! bytes and a scan of passed-through bodies and stream events for `"resp_`.
//!
//! Translated responses are never stored (see `translate::responses_openai`): their ids carry no tag
//! and calls on them answer 404 in OpenAI's shape.

use std::borrow::Cow;

use super::observe::Observation;
use super::{admit, authenticate, forward, relay};
use crate::api::{Api, Endpoint, ResponseCall};
use crate::error::GatewayError;
use crate::server::{Request, Responder};
use crate::snapshot::Snapshot;
use crate::stream::{Event, StreamTranslate};
use crate::upstream::SendBody;

/// The label calls on stored responses have in limits and metrics.
const LABEL: &str = "/v1/responses";

/// Serves a call on a stored response: the backend its id names answers it, once (no other backend
/// has it), with its ids tagged again on the way back. Limits that count requests apply; a retrieved
/// response's usage is not charged again.
pub(super) fn serve_call<'s>(
    snapshot: &'s Snapshot,
    req: &Request,
    resp: &mut Responder,
    ids: &[(&str, &str)],
    call: ResponseCall,
    id: &str,
    obs: &mut Observation<'s>,
) -> Result<(), GatewayError> {
    let client = authenticate(snapshot, req)?;
    obs.set_client(client);
    obs.route = Some(LABEL);
    let not_found = || GatewayError::ResponseNotFound(id.to_string());
    let (tag, upstream_id) = decode(id).ok_or_else(not_found)?;
    let index = snapshot
        .backends
        .iter()
        .position(|b| b.provider.serves_responses() && self::tag(&b.name) == tag)
        .ok_or_else(not_found)?;
    let backend = &snapshot.backends[index];
    let path = backend.provider.passthrough_path(&call.path(&upstream_id)).ok_or_else(not_found)?;
    let client_name = client.map_or("anonymous", |c| c.name.as_str());
    let header = |name: &str| req.head.header(name);
    let admission =
        admit::admit_by_requests(snapshot, client_name, LABEL, &backend.name, &header, &mut obs.limited_by)?;
    let headers = admission.response_headers(ids);
    let query = req.head.target().split_once('?').map_or("", |(_, q)| q);
    let cancel = resp.watch_client();
    let sent = forward(backend, index, req, req.head.method(), &path, query, SendBody::Bytes(&req.body), None);
    if cancel.is_cancelled() {
        return Ok(());
    }
    match sent {
        Ok(mut exchange) => {
            exchange.api = Api::Responses;
            exchange.id_tag = Some(tag.to_string());
            let outcome = relay(exchange, &*backend.provider, Endpoint::Responses, "", resp, &headers, false);
            let zero = crate::translate::Usage::default();
            admission.settle(Some(&zero), 0);
            obs.outcome = Some(outcome);
        }
        Err(e) => {
            let _ = super::send_error(resp, Api::OpenAi, &e, &headers);
        }
    }
    Ok(())
}

/// The tag of a backend: 8 lower-case hex digits of the SHA-256 of its name.
pub fn tag(backend: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, backend.as_bytes());
    digest.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The tag and the upstream's own id in an id the gateway handed out; `None` for an id without one.
pub fn decode(id: &str) -> Option<(&str, String)> {
    let rest = id.strip_prefix("resp_")?;
    let (tag, upstream) = (rest.get(..8)?, rest.get(9..)?);
    let valid = tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) && rest.as_bytes()[8] == b'_';
    (valid && !upstream.is_empty()).then(|| (tag, format!("resp_{upstream}")))
}

/// `bytes` (JSON, or SSE events of JSON) with every JSON string that starts with `resp_` tagged.
pub fn tag_ids<'b>(bytes: &'b [u8], tag: &str) -> Cow<'b, [u8]> {
    const NEEDLE: &[u8] = b"\"resp_";
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], NEEDLE).map(|p| p + from) {
        from = at + NEEDLE.len();
        // A quote escaped by an odd number of backslashes is inside a string: not an id's start.
        let backslashes = bytes[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 1 {
            continue;
        }
        let o = out.get_or_insert_with(|| Vec::with_capacity(bytes.len() + 64));
        o.extend_from_slice(&bytes[copied..from]);
        o.extend_from_slice(tag.as_bytes());
        o.push(b'_');
        copied = from;
    }
    match out {
        None => Cow::Borrowed(bytes),
        Some(mut o) => {
            o.extend_from_slice(&bytes[copied..]);
            Cow::Owned(o)
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while let Some(p) = haystack[i..].iter().position(|b| *b == first) {
        let at = i + p;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// The stream of a passed-through response, relayed as it came but for the tagged ids. It counts the
/// events, so that a failure it must report carries the next `sequence_number`.
pub struct TagIds {
    tag: String,
    events: u64,
}

impl TagIds {
    pub fn new(tag: String) -> TagIds {
        TagIds { tag, events: 0 }
    }
}

impl StreamTranslate for TagIds {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        self.events += 1;
        if event.raw.is_empty() {
            if !event.data.is_empty() {
                crate::sse::write_event(out, event.name, &tag_ids(&event.data, &self.tag));
            }
        } else {
            out.extend_from_slice(&tag_ids(event.raw, &self.tag));
            // A last event that ended the stream without its blank line.
            if !event.raw.ends_with(b"\n\n") && !event.raw.ends_with(b"\r\n\r\n") && !event.raw.ends_with(b"\r\r") {
                out.extend_from_slice(b"\n");
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<u8>) {}

    fn fail(&mut self, _status: u16, message: &str, code: &str, out: &mut Vec<u8>) -> bool {
        let body = serde_json::json!({"type": "error", "sequence_number": self.events, "code": code,
                                      "message": message, "param": null});
        crate::sse::write_event(out, Some("error"), body.to_string().as_bytes());
        true
    }

    fn is_done(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_the_tag() {
        let t = tag("openai");
        assert_eq!(t.len(), 8);
        let body = r#"{"id":"resp_abc","previous_response_id":"resp_x1","text":"say \"resp_no\""}"#;
        let tagged = tag_ids(body.as_bytes(), &t);
        let v: serde_json::Value = serde_json::from_slice(&tagged).unwrap();
        let id = v["id"].as_str().unwrap();
        assert_eq!(id, format!("resp_{t}_abc"));
        assert_eq!(v["previous_response_id"], format!("resp_{t}_x1"));
        assert_eq!(v["text"], "say \"resp_no\"", "text inside a string is not an id");
        assert_eq!(decode(id), Some((t.as_str(), "resp_abc".to_string())));
        assert_eq!(decode("resp_abc"), None);
        assert_eq!(decode("resp_chatcmpl-x"), None);
        assert_eq!(decode(&format!("resp_{t}_")), None);
        assert!(matches!(tag_ids(b"{\"id\":\"msg_1\"}", &t), Cow::Borrowed(_)));
    }
}
