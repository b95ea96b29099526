//! Tool-call ids, which carry Gemini's thought signatures.

use super::*;

/// Separates a tool-call id from the thought signature it carries.
///
/// Gemini correlates function results by name and position, and some of its endpoints reject an `id`
/// on `functionCall`/`functionResponse` parts ("Unknown name \"id\""), so ids are never sent
/// upstream: the id a client sees is Gemini's own `functionCall.id` when it gave one, otherwise
/// synthesized (deterministic). Gemini 3 rejects a history whose function calls lost their
/// `thoughtSignature` ("Function call is missing a thought_signature"), and neither client family
/// has a field for one: the signature therefore rides in the id, after this mark, in base64url, and
/// is restored when the client sends the call back in its history.
pub(crate) const SIGNATURE_MARK: &str = "__thought__";

/// Gemini's documented placeholder signature for function calls it did not produce (a history from
/// another model): set on the first call of a model turn whose calls carry no signature.
pub(crate) const FOREIGN_SIGNATURE: &str = "skip_thought_signature_validator";

/// 64-bit FNV-1a over `parts`, from `seed`: a small, stable hash for deterministic ids.
pub(crate) fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The seed of synthesized ids: Gemini's `responseId`, else `bytes`.
pub(crate) fn id_seed(response_id: Option<&str>, bytes: &[u8]) -> u64 {
    match response_id.filter(|r| !r.is_empty()) {
        Some(r) => fnv1a(FNV_OFFSET, &[r.as_bytes()]),
        None => fnv1a(FNV_OFFSET, &[bytes]),
    }
}

/// The client-facing id of the `n`-th function call of a response: Gemini's id if it gave one,
/// else `{prefix}{seed}_{n}`; with the part's thought signature appended after [`SIGNATURE_MARK`].
pub(crate) fn call_id(prefix: &str, given: Option<&str>, seed: u64, n: u64, signature: Option<&str>) -> String {
    let mut id = match given.filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("{prefix}{seed:016x}_{n}"),
    };
    if let Some(sig) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_MARK);
        id.extend(sig.chars().filter(|c| *c != '=').map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        }));
    }
    id
}

/// The thought signature a client's tool-call id carries (standard base64, padded), if any.
pub(crate) fn signature_in_id(id: &str) -> Option<String> {
    let (_, tail) = id.split_once(SIGNATURE_MARK)?;
    if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    let mut sig: String = tail
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !sig.len().is_multiple_of(4) {
        sig.push('=');
    }
    Some(sig)
}

/// A `functionCall` part for the history, with its signature when there is one.
pub(crate) fn function_call_part(name: &str, args: Value, signature: Option<String>) -> Value {
    let mut part = Map::new();
    part.insert("functionCall".into(), json!({"name": name, "args": args}));
    if let Some(sig) = signature {
        part.insert("thoughtSignature".into(), json!(sig));
    }
    Value::Object(part)
}

/// Gives the first function call of each model turn whose calls carry no signature at all Gemini's
/// placeholder ([`FOREIGN_SIGNATURE`]): such a history came from another model, or from a client
/// that lost the signature, and Gemini 3 would otherwise reject it.
pub(crate) fn sign_foreign_calls(contents: &mut [Value]) {
    for content in contents.iter_mut().filter(|c| c["role"] == "model") {
        let Some(parts) = content.get_mut("parts").and_then(Value::as_array_mut) else { continue };
        let calls = || parts.iter().filter(|p| p.get("functionCall").is_some());
        if calls().any(|p| p.get("thoughtSignature").is_some()) {
            continue;
        }
        if let Some(first) = parts.iter_mut().find(|p| p.get("functionCall").is_some()) {
            first["thoughtSignature"] = json!(FOREIGN_SIGNATURE);
        }
    }
}

/// Appends `parts` to the conversation, merging them into the last content when it has the same
/// role (Gemini wants the results of parallel calls together, and alternating turns).
pub(crate) fn push_content(contents: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((r, p)) if *r == role => p.extend(parts),
        _ => contents.push((role, parts)),
    }
}

/// The `contents` array, with placeholder signatures where the history lacks them.
pub(crate) fn contents_value(contents: Vec<(&'static str, Vec<Value>)>) -> Value {
    let mut out: Vec<Value> = contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect();
    sign_foreign_calls(&mut out);
    Value::Array(out)
}
