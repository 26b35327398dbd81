//! The one error type of the API and the one place it becomes a DHIS2 WebMessage.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clinicbox_dhis2::{ImportReport, ImportStatus, Status, WebMessage};
use clinicbox_store::StoreError;

/// Everything a handler can fail with. Each variant maps to one HTTP status below; adding a
/// variant forces a decision there.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong credentials. The message is what tablets see; never "Account disabled"
    /// here (the app wipes its data on that text).
    #[error("{0}")]
    Unauthorized(String),
    /// The account really is disabled: the exact DHIS2 text, which makes the app remove the
    /// account from the tablet.
    #[error("Account disabled")]
    AccountDisabled,
    /// Too many failed logins for this username: DHIS2's lock text (app shows "account locked").
    #[error("Account locked")]
    AccountLocked,
    /// Too many failed logins from this client address.
    #[error("Too many failed login attempts from this address, try again later")]
    TooManyRequests,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// A metadata import that did not fully succeed: 409 with the report.
    #[error("One or more errors occurred, please see full details in import report.")]
    Import(Box<ImportReport>),
    #[error("Request body too large")]
    PayloadTooLarge,
    /// A bound of the box's (objects per import, …) that the request goes over; the message
    /// names the limit.
    #[error("{0}")]
    LimitExceeded(String),
    #[error("Unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::NotFound(what.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::AccountDisabled | ApiError::AccountLocked => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) | ApiError::Import(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge | ApiError::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The WebMessage body for this error.
    pub fn web_message(&self) -> WebMessage {
        let code = self.status().as_u16();
        match self {
            // 5xx: a generic message; the cause is logged once, here.
            ApiError::Store(e) => {
                tracing::error!(error = %e, "request failed on the store");
                WebMessage::new(code, "The box could not complete the request; try again")
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "request failed");
                WebMessage::new(code, "The box could not complete the request; try again")
            }
            ApiError::Import(report) => {
                let status = match report.status {
                    ImportStatus::Ok => Status::Ok,
                    _ => Status::Warning,
                };
                WebMessage::new(code, self.to_string())
                    .with_status(status)
                    .with_response(serde_json::to_value(report.as_ref()).unwrap_or_default())
            }
            // Messages may quote what a request sent (a filter, a path, a field list): never
            // more than a short prefix of it goes back.
            _ => WebMessage::new(
                code,
                clinicbox_dhis2::value_type::excerpt_message(&self.to_string()),
            ),
        }
    }
}

/// Serialises a WebMessage with `application/json` and the given status.
pub fn web_message_response(msg: &WebMessage) -> Response {
    let status = StatusCode::from_u16(msg.http_status_code).unwrap_or(StatusCode::OK);
    json_response(status, msg)
}

/// A JSON body with `Content-Type: application/json;charset=UTF-8`.
pub fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            r
        }
        Err(e) => ApiError::Internal(format!("serialising a response: {e}")).into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = web_message_response(&self.web_message());
        if matches!(self.status(), StatusCode::UNAUTHORIZED) {
            // Tell generic clients how to authenticate; the SDK ignores it. No realm prompt
            // cookie, no redirect.
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"DHIS2\""),
            );
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_a_four_field_web_message() {
        let cases = [
            ApiError::Unauthorized("Unauthorized".into()),
            ApiError::AccountDisabled,
            ApiError::AccountLocked,
            ApiError::TooManyRequests,
            ApiError::Forbidden("no".into()),
            ApiError::NotFound("x".into()),
            ApiError::BadRequest("x".into()),
            ApiError::Conflict("x".into()),
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType("text/plain".into()),
            ApiError::Internal("secret detail".into()),
        ];
        for e in cases {
            let code = e.status().as_u16();
            let v = serde_json::to_value(e.web_message()).unwrap();
            assert_eq!(v["httpStatusCode"], code);
            assert!(v["httpStatus"].is_string());
            assert_eq!(v["status"], "ERROR");
            assert!(v["message"].is_string());
            assert!(!v["message"].as_str().unwrap().contains("secret"));
        }
    }

    #[test]
    fn only_the_disabled_variant_says_account_disabled() {
        assert_eq!(
            ApiError::AccountDisabled.web_message().message,
            "Account disabled"
        );
        assert_ne!(
            ApiError::Unauthorized("Unauthorized".into())
                .web_message()
                .message,
            "Account disabled"
        );
    }
}
