//! Google's error shape.

use super::*;

/// Google's `{"error": {"code", "message", "status"}}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GoogleError {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

/// The error in a Google error body (also the one-element array `streamGenerateContent` answers
/// without SSE).
pub(crate) fn google_error(body: &[u8]) -> Option<GoogleError> {
    // Checked first: serde would also read a one-element array as the struct.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return serde_json::from_slice::<Vec<ErrorBody>>(body).ok()?.into_iter().next().map(|e| e.error);
    }
    serde_json::from_slice::<ErrorBody>(body).ok().map(|e| e.error)
}

/// The HTTP status of an error reported inside a stream (its `code`, or its `status` name).
pub(crate) fn stream_error_status(e: &GoogleError) -> u16 {
    if let Some(code) = e.code.filter(|c| (400..=599).contains(c)) {
        return code;
    }
    match e.status.as_deref().unwrap_or("") {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ABORTED" | "ALREADY_EXISTS" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}
