//! OpenAI embeddings ↔ Gemini `batchEmbedContents`.

use super::*;

/// `POST /v1/embeddings` request body (the fields read).
#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// An embeddings request in Gemini's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsTranslation {
    /// The `batchEmbedContents` body.
    pub body: Vec<u8>,
    /// Client fields that were dropped (`user`, unknown fields).
    pub dropped: Vec<String>,
    /// The client asked for `encoding_format: "base64"`.
    pub base64: bool,
}

/// Translate an OpenAI embeddings request into a Gemini API `batchEmbedContents` body:
/// `{"requests": [{"model": "models/<m>", "content": {"parts": [{"text"}]}, "outputDimensionality"?}]}`,
/// one request per input string (`dimensions` → `outputDimensionality`). The model is
/// `opts.model`, else the client's. Token arrays are refused (Gemini embeds text). The `gemini`
/// provider sends this body to `models/{model}:batchEmbedContents`; the `vertex` provider converts
/// it with [`vertex_predict_body`] for `:predict`.
pub fn embeddings_request(body: &[u8], opts: &RequestOptions) -> Result<EmbeddingsTranslation, TranslateError> {
    let req: EmbeddingsRequest = parse_json(body)?;
    let model = opts.model.clone().or(req.model).unwrap_or_default();
    let model = if model.starts_with("models/") { model } else { format!("models/{model}") };
    let texts: Vec<&str> = match &req.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect()
        }
        Value::Array(items) if items.is_empty() => return Err(TranslateError::invalid("input", "must not be empty")),
        Value::Array(_) => {
            return Err(TranslateError::invalid("input", "Gemini embeds text: send strings, not token arrays"))
        }
        _ => return Err(TranslateError::invalid("input", "must be a string or an array of strings")),
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(TranslateError::invalid("encoding_format", format!("unknown value `{other}`"))),
    };
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut r = Map::new();
            r.insert("model".into(), json!(model));
            r.insert("content".into(), json!({"parts": [{"text": text}]}));
            if let Some(d) = req.dimensions {
                r.insert("outputDimensionality".into(), json!(d));
            }
            Value::Object(r)
        })
        .collect();
    let mut dropped: Vec<String> = req.rest.keys().cloned().collect();
    dropped.sort();
    Ok(EmbeddingsTranslation { body: to_bytes(&json!({ "requests": requests })), dropped, base64 })
}

/// Vertex AI embeds through `publishers/google/models/{model}:predict`: the `batchEmbedContents`
/// body of [`embeddings_request`] as `{"instances": [{"content": "<text>"}, …], "parameters":
/// {"outputDimensionality": N}?}`. The `vertex` provider applies this in `finish_body` for
/// embeddings; its `predict` answer is read by [`embeddings_response`] as it comes.
pub fn vertex_predict_body(batch: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(batch)?;
    let requests = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("requests", "a batchEmbedContents body needs `requests`"))?;
    let mut instances = Vec::with_capacity(requests.len());
    let mut dimensions = None;
    for r in requests {
        let text: String = r
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect();
        instances.push(json!({ "content": text }));
        dimensions = dimensions.or_else(|| r.get("outputDimensionality").cloned());
    }
    let mut out = Map::new();
    out.insert("instances".into(), Value::Array(instances));
    if let Some(d) = dimensions {
        out.insert("parameters".into(), json!({ "outputDimensionality": d }));
    }
    Ok(to_bytes(&Value::Object(out)))
}

/// Translate an embeddings answer into OpenAI's `{"object": "list", "data": [...], "model", "usage"}`.
/// Reads both shapes: the Gemini API's `{"embeddings": [{"values": [...]}]}` (`batchEmbedContents`;
/// `embedContent`'s single `embedding` too), which reports no token count (usage is then 0), and
/// Vertex AI's `{"predictions": [{"embeddings": {"values": [...], "statistics": {"token_count"}}}]}`,
/// whose token counts are summed. With `opts.embeddings_base64` each vector is the base64 of its
/// little-endian `f32`s, as OpenAI sends it.
pub fn embeddings_response(body: &[u8], model: &str, opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(body)?;
    let mut vectors: Vec<&Vec<Value>> = Vec::new();
    let mut tokens = 0u64;
    if let Some(list) = v.get("embeddings").and_then(Value::as_array) {
        vectors.extend(list.iter().filter_map(|e| e.get("values").and_then(Value::as_array)));
    } else if let Some(one) = v.pointer("/embedding/values").and_then(Value::as_array) {
        vectors.push(one);
    } else if let Some(predictions) = v.get("predictions").and_then(Value::as_array) {
        for p in predictions {
            if let Some(values) = p.pointer("/embeddings/values").and_then(Value::as_array) {
                vectors.push(values);
            }
            tokens += p.pointer("/embeddings/statistics/token_count").and_then(Value::as_f64).unwrap_or(0.0) as u64;
        }
    } else {
        return Err(TranslateError::InvalidJson("an embeddings answer needs `embeddings` or `predictions`".into()));
    }
    if let Some(u) = usage_from_gemini(&v) {
        tokens = u.prompt_tokens();
    }
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, values)| {
            let embedding = if opts.embeddings_base64 {
                let mut bytes = Vec::with_capacity(values.len() * 4);
                for x in values.iter() {
                    bytes.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                }
                json!(crate::base64::encode(&bytes))
            } else {
                Value::Array(values.to_vec())
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let out = obj(vec![
        ("object", json!("list")),
        ("data", Value::Array(data)),
        ("model", json!(model)),
        ("usage", json!({"prompt_tokens": tokens, "total_tokens": tokens})),
    ]);
    Ok(to_bytes(&out))
}
