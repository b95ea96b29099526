//! One small file per upstream kind: where requests go and how they authenticate.

pub mod anthropic;
pub mod mock;
pub mod openai;

use crate::error::ClientSchema;

/// The OpenAI-family operations the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
}

impl Endpoint {
    /// The path below `/v1` (and below a backend's `base_url`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The schema of the client calling this endpoint.
    pub fn client_schema(self) -> ClientSchema {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ClientSchema::Anthropic,
            _ => ClientSchema::OpenAi,
        }
    }

    /// The body field that must be present besides `model`.
    pub fn required_field(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings => "input",
        }
    }
}
