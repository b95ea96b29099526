//! The API families bodies are written in, and the client endpoints the gateway serves.
//!
//! One name for one idea: a client speaks an [`Api`] (chosen by its endpoint), a provider takes bodies in
//! an [`Api`], usage is read in the upstream's [`Api`], and a translator exists per (client, upstream)
//! pair of them (`translate::Pair`).

/// The API family a request or response body speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI Chat Completions (and completions, embeddings): OpenAI and every compatible server.
    OpenAi,
    /// Anthropic Messages: Anthropic, Claude on Bedrock (InvokeModel).
    Anthropic,
    /// AWS Bedrock Converse.
    Converse,
    /// Google Gemini `generateContent` (and `streamGenerateContent`, `batchEmbedContents`, `countTokens`):
    /// the Gemini API and Vertex AI, which share the wire format.
    Gemini,
    /// OpenAI Responses (`/v1/responses`): a client family, and the upstream family of providers that
    /// serve `/responses` themselves (`Provider::serves_responses`).
    Responses,
}

impl Api {
    /// Whether errors and SSE events for a client of this family use Anthropic's shapes.
    pub fn is_anthropic(self) -> bool {
        self == Api::Anthropic
    }
}

/// The operations clients call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/completions`.
    Completions,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/responses/input_tokens`.
    ResponsesInputTokens,
}

impl Endpoint {
    /// The path a client calls (and, for OpenAI-compatible and Anthropic servers, the path below a
    /// backend's `base_url`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
            Endpoint::Responses => "/responses",
            Endpoint::ResponsesInputTokens => "/responses/input_tokens",
        }
    }

    /// The family of the client calling this endpoint.
    pub fn client_api(self) -> Api {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => Api::Anthropic,
            Endpoint::Responses | Endpoint::ResponsesInputTokens => Api::Responses,
            _ => Api::OpenAi,
        }
    }

    /// The body field that must be present besides `model`.
    pub fn required_field(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings | Endpoint::Responses | Endpoint::ResponsesInputTokens => "input",
        }
    }

    /// The endpoint that serves the same purpose in another family (a chat in Anthropic is `Messages`),
    /// or `None` when that family has no such operation.
    pub fn in_family(self, api: Api) -> Option<Endpoint> {
        match (self, api) {
            (e, a) if e.client_api() == a => Some(e),
            (Endpoint::ChatCompletions, Api::Anthropic) => Some(Endpoint::Messages),
            (Endpoint::Messages, Api::OpenAi) => Some(Endpoint::ChatCompletions),
            // Converse bodies are chats whatever the client called.
            (Endpoint::ChatCompletions | Endpoint::Messages, Api::Converse) => Some(self),
            (Endpoint::CountTokens, Api::Converse) => Some(Endpoint::CountTokens),
            // Gemini bodies are chats whatever the client called; an OpenAI client's embeddings become
            // `batchEmbedContents` (Vertex: `predict`), an Anthropic token count `countTokens`.
            (Endpoint::ChatCompletions | Endpoint::Messages, Api::Gemini) => Some(self),
            (Endpoint::Embeddings, Api::Gemini) => Some(Endpoint::Embeddings),
            (Endpoint::CountTokens, Api::Gemini) => Some(Endpoint::CountTokens),
            // A response is a chat in every other family (the translators go through OpenAI's).
            (Endpoint::Responses, Api::OpenAi | Api::Converse | Api::Gemini) => Some(Endpoint::ChatCompletions),
            (Endpoint::Responses, Api::Anthropic) => Some(Endpoint::Messages),
            _ => None,
        }
    }
}

/// The calls on one stored response (`/v1/responses/{id}…`): answered by the backend that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCall {
    /// `GET /v1/responses/{id}`.
    Retrieve,
    /// `DELETE /v1/responses/{id}`.
    Delete,
    /// `POST /v1/responses/{id}/cancel`.
    Cancel,
    /// `GET /v1/responses/{id}/input_items`.
    InputItems,
}

impl ResponseCall {
    /// The call for a method and the path after `/v1/responses/`, with the response id; `None` when the
    /// path is not one of these calls (`Err(allow)`: a known path with the wrong method, and the methods it takes).
    pub fn parse<'p>(method: &str, rest: &'p str) -> Option<Result<(ResponseCall, &'p str), &'static str>> {
        let (id, suffix) = rest.split_once('/').unwrap_or((rest, ""));
        if id.is_empty() {
            return None;
        }
        let (call, allow) = match (suffix, method) {
            ("", "DELETE") => (Some(ResponseCall::Delete), "GET, DELETE"),
            ("", "GET") => (Some(ResponseCall::Retrieve), "GET, DELETE"),
            ("", _) => (None, "GET, DELETE"),
            ("cancel", "POST") => (Some(ResponseCall::Cancel), "POST"),
            ("cancel", _) => (None, "POST"),
            ("input_items", "GET") => (Some(ResponseCall::InputItems), "GET"),
            ("input_items", _) => (None, "GET"),
            _ => return None,
        };
        Some(call.map(|call| (call, id)).ok_or(allow))
    }

    /// The path of this call below `/v1` for the response `id`.
    pub fn path(self, id: &str) -> String {
        match self {
            ResponseCall::Retrieve | ResponseCall::Delete => format!("/v1/responses/{id}"),
            ResponseCall::Cancel => format!("/v1/responses/{id}/cancel"),
            ResponseCall::InputItems => format!("/v1/responses/{id}/input_items"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_serves_chats_messages_embeddings_and_token_counts_but_not_completions() {
        for e in [Endpoint::ChatCompletions, Endpoint::Messages, Endpoint::Embeddings, Endpoint::CountTokens] {
            assert_eq!(e.in_family(Api::Gemini), Some(e));
        }
        assert_eq!(Endpoint::Completions.in_family(Api::Gemini), None);
        assert!(!Api::Gemini.is_anthropic());
        assert_eq!(Endpoint::Responses.in_family(Api::Gemini), Some(Endpoint::ChatCompletions));
        assert_eq!(
            crate::translate::Pair::between(Api::Responses, Api::Gemini),
            Some(crate::translate::Pair::ResponsesVia(Api::Gemini))
        );
    }
}
