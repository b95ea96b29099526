//! Media parts and thinking budgets.

use super::*;

pub(crate) fn inline_data(mime_type: &str, data: &str) -> Value {
    json!({"inlineData": {"mimeType": mime_type, "data": data}})
}

pub(crate) fn file_data(mime_type: &str, uri: &str) -> Value {
    json!({"fileData": {"mimeType": mime_type, "fileUri": uri}})
}

/// The media type a file URI's extension names (Vertex requires one on `fileData`).
pub(crate) fn mime_from_uri(uri: &str) -> Option<&'static str> {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// A `fileData` part for a URL (`gs://…`, a Files API URI, an http(s) URL Vertex can fetch), or an
/// error naming `field` when its media type cannot be told from its name.
pub(crate) fn url_part(url: &str, field: &str) -> Result<Value, TranslateError> {
    let mime = mime_from_uri(url).ok_or_else(|| {
        invalid(
            field,
            "Gemini takes a media URL as `fileData` with its media type, which this URL's name does not tell \
             (.png, .jpg, .gif, .webp, .heic, .pdf, …): send a data URL or base64 data instead",
        )
    })?;
    Ok(file_data(mime, url))
}

/// The thinking budget for an OpenAI `reasoning_effort`: the budgets Google's own OpenAI
/// compatibility uses (`low` 1024, `medium` 8192, `high` 24576, `none` 0 = off), plus `minimal` 512.
pub(crate) fn effort_budget(effort: &str) -> Result<u64, TranslateError> {
    match effort {
        "none" => Ok(0),
        "minimal" => Ok(512),
        "low" => Ok(1024),
        "medium" => Ok(8192),
        "high" => Ok(24576),
        other => Err(invalid("reasoning_effort", format!("unknown value `{other}`"))),
    }
}

/// `thinkingConfig` for a budget: thought summaries are asked for whenever thinking is on, so that
/// clients see the reasoning (`reasoning_content`, `thinking` blocks).
pub(crate) fn thinking_config(budget: i64) -> Value {
    if budget == 0 {
        json!({"thinkingBudget": 0})
    } else {
        json!({"thinkingBudget": budget, "includeThoughts": true})
    }
}
