//! OpenAI messages → Converse messages and content blocks.

use super::*;

fn text_block(text: &str) -> Value {
    json!({ "text": text })
}

/// Push `block`, followed by a cache point when the OpenAI part asked for one.
fn push_part(out: &mut Vec<Value>, block: Value, part: &Value) {
    out.push(block);
    if part.get("cache_control").is_some_and(Value::is_object) {
        out.push(json!({"cachePoint": {"type": "default"}}));
    }
}

/// Text of a content part, or `Ok(None)` for an empty one.
fn part_text<'a>(p: &'a Value, key: &str, pf: &str) -> Result<Option<&'a str>, TranslateError> {
    let t =
        p.get(key).and_then(Value::as_str).ok_or_else(|| TranslateError::invalid(format!("{pf}.{key}"), "missing"))?;
    Ok(Some(t).filter(|t| !t.is_empty()))
}

/// Text blocks of a system/developer/tool message content.
fn text_blocks(content: &Option<Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(if s.is_empty() { vec![] } else { vec![text_block(s)] }),
        Some(Value::Array(parts)) => {
            let mut out = vec![];
            for (j, p) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = part_text(p, "text", &pf)? {
                            push_part(&mut out, text_block(t), p);
                        }
                    }
                    _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(field, "must be a string or an array")),
    }
}

/// Converse image format for an image media type.
fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type.to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn image_block(p: &Value, pf: &str) -> Result<Value, TranslateError> {
    let url = match p.get("image_url") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
        None => "",
    };
    if url.starts_with("https://") || url.starts_with("http://") {
        // Converse takes image bytes (or S3 locations); nothing is fetched here.
        return Err(TranslateError::unsupported(format!("{pf}.image_url")));
    }
    if !url.starts_with("data:") {
        return Err(TranslateError::invalid(format!("{pf}.image_url.url"), "must be an http(s) or data URL"));
    }
    let (media_type, data) = parse_data_url(url).ok_or_else(|| {
        TranslateError::invalid(format!("{pf}.image_url.url"), "data URL must be `data:<media type>;base64,<data>`")
    })?;
    let format = image_format(media_type).ok_or_else(|| TranslateError::unsupported(format!("{pf}.image_url")))?;
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// A PDF `file` part as a Converse document. Converse requires a name made
/// of letters, digits, single spaces, hyphens, parentheses and brackets; the
/// position keeps it unique within the request.
fn document_block(p: &Value, pf: &str, position: (usize, usize)) -> Result<Value, TranslateError> {
    let data = p.pointer("/file/file_data").and_then(Value::as_str);
    match data.and_then(parse_data_url) {
        Some(("application/pdf", d)) => Ok(json!({"document": {
            "format": "pdf",
            "name": format!("document-{}-{}", position.0, position.1),
            "source": {"bytes": d},
        }})),
        _ => Err(TranslateError::unsupported(format!("{pf}.file"))),
    }
}

fn user_blocks(content: &Option<Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    let field = format!("messages[{i}].content");
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => return text_blocks(other, &field),
    };
    let mut out = vec![];
    for (j, p) in parts.iter().enumerate() {
        let pf = format!("{field}[{j}]");
        let block = match p.get("type").and_then(Value::as_str) {
            Some("text") => match part_text(p, "text", &pf)? {
                Some(t) => text_block(t),
                None => continue,
            },
            Some("image_url") => image_block(p, &pf)?,
            Some("file") => document_block(p, &pf, (i, j))?,
            _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
        };
        push_part(&mut out, block, p);
    }
    Ok(out)
}

fn tool_use_block(tc: &oa::ToolCall, i: usize, j: usize, slots: &mut RawSlots) -> Result<Value, TranslateError> {
    if tc.id.is_empty() {
        return Err(TranslateError::invalid(format!("messages[{i}].tool_calls[{j}].id"), "missing"));
    }
    let af = format!("messages[{i}].tool_calls[{j}].function.arguments");
    let input = match tool_call_arguments(&tc.function.arguments, &af)? {
        (parsed, Some(source)) => slots.slot(source, parsed),
        (parsed, None) => parsed,
    };
    Ok(json!({"toolUse": {"toolUseId": tc.id, "name": tc.function.name, "input": input}}))
}

fn assistant_blocks(m: &oa::ChatMessage, i: usize, slots: &mut RawSlots) -> Result<Vec<Value>, TranslateError> {
    let field = format!("messages[{i}].content");
    let mut out = match &m.content {
        Some(Value::Array(parts)) => {
            let mut v = vec![];
            for (j, p) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                let key = match p.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
                };
                if let Some(t) = p.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    push_part(&mut v, text_block(t), p);
                }
            }
            v
        }
        other => text_blocks(other, &field)?,
    };
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        out.push(tool_use_block(tc, i, j, slots)?);
    }
    Ok(out)
}

fn tool_result_block(m: &oa::ChatMessage, i: usize) -> Result<Value, TranslateError> {
    let id = m
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| TranslateError::invalid(format!("messages[{i}].tool_call_id"), "missing"))?;
    let content = text_blocks(&m.content, &format!("messages[{i}].content"))?;
    // Cache points are content blocks, not tool-result content.
    let content: Vec<Value> = content.into_iter().filter(|b| b.get("text").is_some()).collect();
    Ok(json!({"toolResult": {"toolUseId": id, "content": content}}))
}

/// Convert messages: returns (system blocks, alternating Converse messages).
pub(super) fn convert_messages(
    msgs: &[oa::ChatMessage],
    slots: &mut RawSlots,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system: Vec<Value> = vec![];
    // (role, blocks) with consecutive same roles merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for (i, m) in msgs.iter().enumerate() {
        let (role, blocks): (&'static str, Vec<Value>) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(text_blocks(&m.content, &format!("messages[{i}].content"))?);
                continue;
            }
            "user" => ("user", user_blocks(&m.content, i)?),
            "assistant" => ("assistant", assistant_blocks(m, i, slots)?),
            "tool" => ("user", vec![tool_result_block(m, i)?]),
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
    trim_prefill(&mut turns);
    match turns.first() {
        None => return Err(TranslateError::invalid("messages", "at least one non-system message is required")),
        Some((role, _)) if *role != "user" => {
            return Err(TranslateError::invalid(
                "messages",
                "the first non-system message must be a user message for this upstream (Bedrock Converse)",
            ))
        }
        _ => {}
    }
    let messages = turns.into_iter().map(|(role, blocks)| json!({"role": role, "content": blocks})).collect();
    Ok((system, messages))
}

/// Claude rejects a final assistant prefill ending in whitespace.
fn trim_prefill(turns: &mut Vec<(&'static str, Vec<Value>)>) {
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(last) = blocks.last_mut() {
            if let Some(t) = last.get("text").and_then(Value::as_str) {
                let trimmed = t.trim_end().to_string();
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
}
