//! The one error type of the request path: each variant knows its HTTP status, whether a fallback may
//! retry it on another backend, and how it renders in the client's schema.

use std::fmt;

use crate::api::Api;

/// Everything that can go wrong between reading a request and relaying its response.
#[derive(Debug)]
pub enum GatewayError {
    /// The request body or a field in it is unusable (400).
    BadRequest(String),
    /// No key, or a key that matches no configured client (401).
    Unauthorized,
    /// The client may not use this model (403).
    ModelNotAllowed(String),
    /// No route matches the model (404).
    ModelNotFound(String),
    /// Unknown path (404).
    NotFound,
    /// A stored response the gateway cannot reach: unknown, or translated and never stored (404).
    ResponseNotFound(String),
    /// Reading a streamed request body failed: cut (400), too slow (408) or too large (413).
    RequestBody { status: u16, message: String },
    /// Known path, wrong method (405): the methods it takes, for `Allow`.
    MethodNotAllowed { allow: &'static str },
    /// A backend cannot be used as configured, e.g. its key variable is unset (503).
    BackendUnavailable(String),
    /// No connection to the upstream could be made, so it never saw the request (502, or 504 when the
    /// connect timed out).
    UpstreamConnect { timed_out: bool, message: String },
    /// The upstream could not be reached or broke the protocol (502).
    UpstreamUnreachable(String),
    /// The upstream did not answer in time (504).
    UpstreamTimeout(String),
    /// The gateway is shutting down or over capacity (503).
    Overloaded(String),
    /// A configured rate limit or quota is exhausted (429, with `Retry-After`).
    RateLimited {
        message: String,
        retry_after_secs: u64,
        /// `x-ratelimit-*` headers describing the exhausted limit.
        headers: Vec<(String, String)>,
    },
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_) => 400,
            GatewayError::Unauthorized => 401,
            GatewayError::ModelNotAllowed(_) => 403,
            GatewayError::ModelNotFound(_) | GatewayError::NotFound | GatewayError::ResponseNotFound(_) => 404,
            GatewayError::RequestBody { status, .. } => *status,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::BackendUnavailable(_) | GatewayError::Overloaded(_) => 503,
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamConnect { timed_out: false, .. } => 502,
            GatewayError::UpstreamConnect { timed_out: true, .. } => 504,
            GatewayError::UpstreamTimeout(_) => 504,
            GatewayError::RateLimited { .. } => 429,
        }
    }

    /// `error.type` in metrics, the access log and traces: one fixed word per variant.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::ModelNotAllowed(_) => "model_not_allowed",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BackendUnavailable(_) => "backend_unavailable",
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamConnect { timed_out: false, .. } => {
                "upstream_unreachable"
            }
            GatewayError::UpstreamTimeout(_) | GatewayError::UpstreamConnect { timed_out: true, .. } => {
                "upstream_timeout"
            }
            GatewayError::ResponseNotFound(_) => "response_not_found",
            GatewayError::RequestBody { .. } => "request_body",
            GatewayError::Overloaded(_) => "overloaded",
            GatewayError::RateLimited { .. } => "rate_limited",
        }
    }

    /// Response headers the error carries besides its body (`Retry-After`, `x-ratelimit-*`).
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            GatewayError::RateLimited { retry_after_secs, headers, .. } => {
                let mut out = vec![("retry-after".to_string(), retry_after_secs.to_string())];
                out.extend(headers.iter().cloned());
                out
            }
            GatewayError::Overloaded(_) => vec![("retry-after".to_string(), "1".to_string())],
            GatewayError::MethodNotAllowed { allow } => vec![("allow".to_string(), allow.to_string())],
            _ => Vec::new(),
        }
    }

    /// Whether trying the next backend of the route could succeed where this one failed.
    pub fn may_fall_back(&self) -> bool {
        matches!(
            self,
            GatewayError::BackendUnavailable(_)
                | GatewayError::UpstreamConnect { .. }
                | GatewayError::UpstreamUnreachable(_)
                | GatewayError::UpstreamTimeout(_)
        )
    }

    /// OpenAI's `error.code`.
    fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "invalid_request",
            GatewayError::Unauthorized => "invalid_api_key",
            GatewayError::ModelNotAllowed(_) => "model_not_allowed",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::NotFound => "unknown_url",
            GatewayError::ResponseNotFound(_) => "not_found",
            GatewayError::RequestBody { status, .. } => default_code(*status),
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BackendUnavailable(_) => "backend_unavailable",
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamConnect { timed_out: false, .. } => {
                "upstream_unreachable"
            }
            GatewayError::UpstreamConnect { timed_out: true, .. } => "upstream_timeout",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::Overloaded(_) => "overloaded",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
        }
    }

    /// Renders the error body in the client's schema.
    pub fn body(&self, client: Api) -> Vec<u8> {
        error_body(client, self.status(), &self.to_string(), Some(self.code()))
    }
}

/// OpenAI's `error.code` for an error the gateway answers with no more specific one: the spec we
/// implement (Envoy AI Gateway's `ErrorResponse`) types `code` as a string, so it is never `null`.
pub fn default_code(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        401 => "invalid_api_key",
        402 => "payment_required",
        403 => "permission_denied",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "request_too_large",
        414 => "uri_too_long",
        422 => "unprocessable_entity",
        429 => "rate_limit_exceeded",
        431 => "request_header_fields_too_large",
        500 => "internal_error",
        501 => "not_implemented",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        529 => "overloaded",
        s if s < 500 => "client_error",
        _ => "server_error",
    }
}

/// Most characters of a client-supplied value (a model name) echoed in an error message.
pub const MAX_ECHO_CHARS: usize = 256;

/// `value` cut to [`MAX_ECHO_CHARS`] characters with an ellipsis, so that an absurd value (a 5 MB model
/// name) is not echoed back in full.
pub fn clip(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        None => std::borrow::Cow::Borrowed(value),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &value[..end])),
    }
}

pub use crate::translate::{anthropic_error_type, openai_error_type};

/// An error body in the client's schema. `message` is JSON-escaped here; `code` (OpenAI's shape only)
/// defaults to one for the status.
pub fn error_body(client: Api, status: u16, message: &str, code: Option<&str>) -> Vec<u8> {
    let code = code.unwrap_or_else(|| default_code(status));
    let value = match client {
        Api::OpenAi | Api::Converse | Api::Gemini | Api::Responses => serde_json::json!({
            "error": {
                "message": message,
                "type": openai_error_type(status),
                "param": null,
                "code": code,
            }
        }),
        Api::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": anthropic_error_type(status), "message": message}
        }),
    };
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::BadRequest(m) => write!(f, "{m}"),
            GatewayError::Unauthorized => {
                write!(f, "missing or invalid API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`")
            }
            GatewayError::ModelNotAllowed(m) => write!(f, "this API key may not use model \"{}\"", clip(m)),
            GatewayError::ModelNotFound(m) => {
                write!(f, "the model \"{}\" does not exist or has no route", clip(m))
            }
            GatewayError::NotFound => write!(f, "unknown endpoint"),
            GatewayError::ResponseNotFound(id) => write!(f, "Response with id '{id}' not found."),
            GatewayError::RequestBody { message, .. } => write!(f, "{message}"),
            GatewayError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed on this endpoint (allowed: {allow})")
            }
            GatewayError::BackendUnavailable(m)
            | GatewayError::UpstreamConnect { message: m, .. }
            | GatewayError::UpstreamUnreachable(m)
            | GatewayError::UpstreamTimeout(m)
            | GatewayError::Overloaded(m) => write!(f, "{m}"),
            GatewayError::RateLimited { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_renders_valid_json_in_both_schemas() {
        let all = [
            GatewayError::BadRequest("bad \"quote\" \n newline".into()),
            GatewayError::Unauthorized,
            GatewayError::ModelNotAllowed("m".into()),
            GatewayError::ModelNotFound("m".into()),
            GatewayError::NotFound,
            GatewayError::ResponseNotFound("resp_x".into()),
            GatewayError::RequestBody { status: 413, message: "too large".into() },
            GatewayError::MethodNotAllowed { allow: "POST" },
            GatewayError::BackendUnavailable("b".into()),
            GatewayError::UpstreamUnreachable("u".into()),
            GatewayError::UpstreamConnect { timed_out: true, message: "c".into() },
            GatewayError::UpstreamTimeout("t".into()),
            GatewayError::Overloaded("o".into()),
            GatewayError::RateLimited { message: "r".into(), retry_after_secs: 3, headers: Vec::new() },
        ];
        for e in &all {
            let v: serde_json::Value = serde_json::from_slice(&e.body(Api::OpenAi)).unwrap();
            assert_eq!(v["error"]["message"], e.to_string());
            assert!(v["error"]["code"].is_string(), "{e:?}: code must be a string");
            let v: serde_json::Value = serde_json::from_slice(&e.body(Api::Anthropic)).unwrap();
            assert_eq!(v["type"], "error");
            assert!((400..600).contains(&e.status()));
        }
    }

    #[test]
    fn error_code_is_a_string_for_every_status() {
        for status in [400, 401, 403, 404, 405, 408, 413, 414, 418, 429, 431, 500, 501, 502, 503, 504, 529, 599] {
            let v: serde_json::Value = serde_json::from_slice(&error_body(Api::OpenAi, status, "m", None)).unwrap();
            assert!(v["error"]["code"].is_string(), "{status}");
        }
    }

    #[test]
    fn an_absurd_model_name_is_clipped_in_messages() {
        let huge = "m".repeat(5 << 20);
        let message = GatewayError::ModelNotFound(huge).to_string();
        assert!(message.len() < 400, "{}", message.len());
        assert!(message.contains(&format!("{}…\"", "m".repeat(MAX_ECHO_CHARS))));
        assert_eq!(clip("é".repeat(MAX_ECHO_CHARS).as_str()), "é".repeat(MAX_ECHO_CHARS));
        assert_eq!(clip(&"é".repeat(MAX_ECHO_CHARS + 1)), format!("{}…", "é".repeat(MAX_ECHO_CHARS)));
    }

    #[test]
    fn only_upstream_side_failures_may_fall_back() {
        assert!(GatewayError::UpstreamTimeout(String::new()).may_fall_back());
        assert!(!GatewayError::BadRequest(String::new()).may_fall_back());
        assert!(!GatewayError::Unauthorized.may_fall_back());
    }
}
