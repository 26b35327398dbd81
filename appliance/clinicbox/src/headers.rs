//! Response headers every answer of the box carries, whichever router made it.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// No page of the box may be framed (clickjacking of `/admin` and `/setup`), and no answer may
/// be content-sniffed into something its type does not say (an uploaded file served as HTML).
/// A page that sets its own, stricter policy keeps it.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    match h.get(header::CONTENT_SECURITY_POLICY) {
        Some(csp) if csp.to_str().is_ok_and(|c| c.contains("frame-ancestors")) => {}
        Some(csp) => {
            let joined = format!(
                "{}; frame-ancestors 'none'",
                csp.to_str().unwrap_or("default-src 'none'")
            );
            if let Ok(v) = HeaderValue::from_str(&joined) {
                h.insert(header::CONTENT_SECURITY_POLICY, v);
            }
        }
        None => {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'none'"),
            );
        }
    }
    resp
}
