//! OpenAI messages → Anthropic messages and content blocks.

use super::*;

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// Text parts of a system/developer/tool message content.
fn text_parts(content: &Option<Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(if s.is_empty() { vec![] } else { vec![text_block(s)] }),
        Some(Value::Array(parts)) => {
            let mut out = vec![];
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| TranslateError::invalid(format!("{field}[{j}].text"), "missing"))?;
                        if !t.is_empty() {
                            out.push(text_block(t));
                        }
                    }
                    _ => return Err(TranslateError::unsupported(format!("{field}[{j}].type"))),
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(field, "must be a string or an array")),
    }
}

/// Parse `data:<media type>;base64,<data>`.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

fn user_parts(content: &Option<Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => return text_parts(other, field),
    };
    let mut out = vec![];
    for (j, p) in parts.iter().enumerate() {
        let pf = format!("{field}[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = p
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid(format!("{pf}.text"), "missing"))?;
                if !t.is_empty() {
                    out.push(text_block(t));
                }
            }
            Some("image_url") => {
                let url = match p.get("image_url") {
                    Some(Value::String(s)) => s.as_str(),
                    Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
                    None => "",
                };
                let uf = format!("{pf}.image_url.url");
                let source = if url.starts_with("data:") {
                    let (media_type, data) = parse_data_url(url).ok_or_else(|| {
                        TranslateError::invalid(&uf, "data URL must be `data:<media type>;base64,<data>`")
                    })?;
                    json!({"type": "base64", "media_type": media_type, "data": data})
                } else if url.starts_with("https://") || url.starts_with("http://") {
                    json!({"type": "url", "url": url})
                } else {
                    return Err(TranslateError::invalid(uf, "must be an http(s) or data URL"));
                };
                out.push(json!({"type": "image", "source": source}));
            }
            Some("file") => {
                let data = p.pointer("/file/file_data").and_then(Value::as_str);
                match data.and_then(parse_data_url) {
                    Some(("application/pdf", d)) => out.push(json!({
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": d}
                    })),
                    _ => return Err(TranslateError::unsupported(format!("{pf}.file"))),
                }
            }
            _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
        }
    }
    Ok(out)
}

fn assistant_blocks(m: &oa::ChatMessage, i: usize, slots: &mut RawSlots) -> Result<Vec<Value>, TranslateError> {
    let field = format!("messages[{i}].content");
    let mut out = match &m.content {
        Some(Value::Array(parts)) => {
            let mut v = vec![];
            for (j, p) in parts.iter().enumerate() {
                let key = match p.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    _ => return Err(TranslateError::unsupported(format!("{field}[{j}].type"))),
                };
                if let Some(t) = p.get(key).and_then(Value::as_str) {
                    if !t.is_empty() {
                        v.push(text_block(t));
                    }
                }
            }
            v
        }
        other => text_parts(other, &field)?,
    };
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        let af = format!("messages[{i}].tool_calls[{j}].function.arguments");
        let input = match tool_call_arguments(&tc.function.arguments, &af)? {
            (parsed, Some(source)) => slots.slot(source, parsed),
            (parsed, None) => parsed,
        };
        out.push(json!({
            "type": "tool_use",
            "id": tc.id,
            "name": tc.function.name,
            "input": input,
        }));
    }
    Ok(out)
}

/// Convert messages: returns (system, alternating Anthropic messages).
pub(super) fn convert_messages(
    msgs: &[oa::ChatMessage],
    slots: &mut RawSlots,
) -> Result<(Option<Value>, Vec<Value>), TranslateError> {
    let mut system: Vec<Value> = vec![];
    // (role, blocks) with consecutive same roles merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for (i, m) in msgs.iter().enumerate() {
        let field = format!("messages[{i}].content");
        let (role, blocks): (&'static str, Vec<Value>) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(text_parts(&m.content, &field)?);
                continue;
            }
            "user" => ("user", user_parts(&m.content, &field)?),
            "assistant" => ("assistant", assistant_blocks(m, i, slots)?),
            "tool" => {
                let id = m
                    .tool_call_id
                    .clone()
                    .ok_or_else(|| TranslateError::invalid(format!("messages[{i}].tool_call_id"), "missing"))?;
                let parts = text_parts(&m.content, &field)?;
                let mut block = json!({"type": "tool_result", "tool_use_id": id});
                match parts.as_slice() {
                    [] => {}
                    [one] => block["content"] = one["text"].clone(),
                    _ => block["content"] = Value::Array(parts),
                }
                ("user", vec![block])
            }
            "function" => return Err(TranslateError::unsupported(format!("messages[{i}].role"))),
            other => {
                return Err(TranslateError::invalid(format!("messages[{i}].role"), format!("unknown role `{other}`")))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    // Anthropic rejects a final assistant prefill ending in whitespace.
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(last) = blocks.last_mut() {
            if last["type"] == "text" {
                let trimmed = last["text"].as_str().unwrap_or("").trim_end().to_string();
                if trimmed.is_empty() {
                    blocks.pop();
                } else {
                    last["text"] = Value::String(trimmed);
                }
            }
        }
        if blocks.is_empty() {
            turns.pop();
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, blocks)| {
            let content = match blocks.as_slice() {
                [b] if b["type"] == "text" && b.as_object().is_some_and(|o| o.len() == 2) => b["text"].clone(),
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect();
    let system = match system.as_slice() {
        [] => None,
        [one] => Some(one["text"].clone()),
        _ => Some(Value::Array(system)),
    };
    Ok((system, messages))
}
