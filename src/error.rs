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
    /// Known path, wrong method (405).
    MethodNotAllowed,
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
            GatewayError::MethodNotAllowed => 405,
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
            GatewayError::MethodNotAllowed => "method_not_allowed",
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
    fn code(&self) -> Option<&'static str> {
        match self {
            GatewayError::Unauthorized => Some("invalid_api_key"),
            GatewayError::ModelNotAllowed(_) => Some("model_not_allowed"),
            GatewayError::ModelNotFound(_) => Some("model_not_found"),
            GatewayError::NotFound => Some("unknown_url"),
            GatewayError::BackendUnavailable(_) => Some("backend_unavailable"),
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamConnect { timed_out: false, .. } => {
                Some("upstream_unreachable")
            }
            GatewayError::UpstreamConnect { timed_out: true, .. } => Some("upstream_timeout"),
            GatewayError::UpstreamTimeout(_) => Some("upstream_timeout"),
            GatewayError::Overloaded(_) => Some("overloaded"),
            GatewayError::RateLimited { .. } => Some("rate_limit_exceeded"),
            _ => None,
        }
    }

    /// Renders the error body in the client's schema.
    pub fn body(&self, client: Api) -> Vec<u8> {
        error_body(client, self.status(), &self.to_string(), self.code())
    }
}

pub use crate::translate::{anthropic_error_type, openai_error_type};

/// An error body in the client's schema. `message` is JSON-escaped here.
pub fn error_body(client: Api, status: u16, message: &str, code: Option<&str>) -> Vec<u8> {
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
            GatewayError::ModelNotAllowed(m) => write!(f, "this API key may not use model \"{m}\""),
            GatewayError::ModelNotFound(m) => {
                write!(f, "the model \"{m}\" does not exist or has no route")
            }
            GatewayError::NotFound => write!(f, "unknown endpoint"),
            GatewayError::ResponseNotFound(id) => write!(f, "Response with id '{id}' not found."),
            GatewayError::RequestBody { message, .. } => write!(f, "{message}"),
            GatewayError::MethodNotAllowed => write!(f, "method not allowed on this endpoint"),
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
            GatewayError::MethodNotAllowed,
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
            let v: serde_json::Value = serde_json::from_slice(&e.body(Api::Anthropic)).unwrap();
            assert_eq!(v["type"], "error");
            assert!((400..600).contains(&e.status()));
        }
    }

    #[test]
    fn only_upstream_side_failures_may_fall_back() {
        assert!(GatewayError::UpstreamTimeout(String::new()).may_fall_back());
        assert!(!GatewayError::BadRequest(String::new()).may_fall_back());
        assert!(!GatewayError::Unauthorized.may_fall_back());
    }
}
