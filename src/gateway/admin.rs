//! The operator's endpoints: `/health`, `/ready` and `/metrics`, on the public listener (see
//! [`super::handle`]) and alone on the admin listener.

use crate::api::Api;
use crate::error::GatewayError;
use crate::metrics;
use crate::server::{Request, Responder};
use crate::snapshot::{AdminAuth, Snapshot};

use super::send_error;

/// Serves one request on the admin listener: `/metrics`, `/ready` and `/health` only. These are
/// counted in `switchyard_requests_total` but not written to the access log.
pub fn handle_admin(req: &Request, resp: &mut Responder) {
    let snapshot = crate::snapshot::current();
    let method = req.head.method();
    let get = method == "GET" || method == "HEAD";
    let result = match req.head.path() {
        "/health" | "/healthz" if get => {
            health(resp, &[]);
            Ok(())
        }
        "/ready" | "/readyz" if get => {
            ready(resp, &[]);
            Ok(())
        }
        "/metrics" if method == "GET" => metrics_page(&snapshot, req, resp, &[]),
        "/health" | "/healthz" | "/ready" | "/readyz" => Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" }),
        "/metrics" => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
        _ => Err(GatewayError::NotFound),
    };
    let error = match result {
        Ok(()) => metrics::EMPTY,
        Err(e) => {
            let _ = send_error(resp, Api::OpenAi, &e, &[]);
            metrics::label(e.kind())
        }
    };
    metrics::count_request(metrics::EMPTY, resp.status(), error);
}

pub(super) fn health(resp: &mut Responder, ids: &[(&str, &str)]) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(ids);
    let _ = resp.send(200, &headers, br#"{"status":"ok"}"#);
}

/// `GET /ready`: 200 while the gateway serves; 503 before its first config is in use and while it
/// drains at shutdown.
pub(super) fn ready(resp: &mut Responder, ids: &[(&str, &str)]) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(ids);
    let (status, body): (u16, &[u8]) = match crate::runtime::readiness() {
        crate::runtime::Readiness::Ready => (200, br#"{"status":"ready"}"#),
        crate::runtime::Readiness::Starting => (503, br#"{"status":"starting"}"#),
        crate::runtime::Readiness::Draining => (503, br#"{"status":"draining"}"#),
    };
    let _ = resp.send(status, &headers, body);
}

/// `GET /metrics`, behind `admin_key` when one is configured.
pub(super) fn metrics_page(
    snapshot: &Snapshot,
    req: &Request,
    resp: &mut Responder,
    ids: &[(&str, &str)],
) -> Result<(), GatewayError> {
    match &snapshot.admin {
        AdminAuth::Open => {}
        AdminAuth::Unset => return Err(GatewayError::Unauthorized),
        AdminAuth::Key(key) => {
            let given = req
                .head
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .unwrap_or("");
            if !crate::snapshot::constant_time_eq(key.0.as_bytes(), given.as_bytes()) {
                return Err(GatewayError::Unauthorized);
            }
        }
    }
    let body = metrics::render();
    let mut headers = vec![("content-type", "text/plain; version=0.0.4")];
    headers.extend_from_slice(ids);
    let _ = resp.send(200, &headers, body.as_bytes());
    Ok(())
}
