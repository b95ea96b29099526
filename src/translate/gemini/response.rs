//! The `generateContent` response wire types and finish reasons.

use super::*;

/// A `generateContent` response, or one `streamGenerateContent` chunk (the fields the translators
/// read). A stream chunk may also be an in-stream `{"error": …}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentResponse {
    #[serde(default, deserialize_with = "null_as_default")]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<Value>,
    #[serde(default)]
    pub response_id: Option<String>,
    #[serde(default)]
    pub error: Option<GoogleError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Content {
    #[serde(default, deserialize_with = "null_as_default")]
    pub parts: Vec<Part>,
}

/// One response part: text (a thought when `thought`), a whole function call, or something the
/// translators do not relay (inline images, executable code).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Part {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub thought_signature: Option<String>,
    #[serde(default)]
    pub function_call: Option<FunctionCall>,
}

impl Part {
    pub(crate) fn is_thought(&self) -> bool {
        self.thought == Some(true)
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FunctionCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub args: Option<Box<RawValue>>,
}

impl FunctionCall {
    /// The arguments as compact JSON text in the model's key order (`{}` when absent or not an object).
    pub(crate) fn arguments(&self) -> String {
        match self.args.as_deref().and_then(|raw| Ordered::parse(raw.get())) {
            Some(o @ Ordered::Object(_)) => o.to_json(),
            _ => "{}".to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
    #[serde(default)]
    pub block_reason_message: Option<String>,
}

impl GenerateContentResponse {
    /// The parts of the first candidate (the translators ask for one).
    pub(crate) fn parts(&self) -> &[Part] {
        self.candidates.first().and_then(|c| c.content.as_ref()).map_or(&[], |c| &c.parts)
    }

    pub(crate) fn finish_reason(&self) -> Option<&str> {
        self.candidates.first().and_then(|c| c.finish_reason.as_deref())
    }

    /// A prompt Gemini blocked (`promptFeedback.blockReason` and no candidate) as the refusal the
    /// client gets: HTTP 400, code `content_filter`.
    pub(crate) fn refusal(&self) -> Option<TranslateError> {
        if !self.candidates.is_empty() {
            return None;
        }
        let feedback = self.prompt_feedback.as_ref()?;
        let reason = feedback.block_reason.as_deref().filter(|r| !r.is_empty())?;
        let mut message = format!("the prompt was blocked by the upstream's safety filters (blockReason {reason})");
        if let Some(detail) = feedback.block_reason_message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(": ");
            message.push_str(detail);
        }
        Some(TranslateError::Refused { status: 400, code: BLOCKED_CODE.to_string(), message })
    }
}

/// `error.code` of a refusal for a blocked prompt (the code OpenAI and Azure use for filtered content).
pub(crate) const BLOCKED_CODE: &str = "content_filter";

/// What a `finishReason` means, whatever the client's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// `STOP` (natural end or a stop sequence).
    Stop,
    /// `MAX_TOKENS`.
    Length,
    /// Withheld by a filter: `SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`,
    /// `LANGUAGE`, `IMAGE_SAFETY` and the like.
    Filtered,
    /// Anything else (`OTHER`, `MALFORMED_FUNCTION_CALL`, `UNEXPECTED_TOOL_CALL`, new values).
    Other,
}

pub(crate) fn finish(reason: &str) -> Finish {
    match reason {
        "STOP" => Finish::Stop,
        "MAX_TOKENS" => Finish::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => Finish::Filtered,
        _ => Finish::Other,
    }
}
