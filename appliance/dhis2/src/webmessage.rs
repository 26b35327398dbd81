//! DHIS2's `WebMessage`: the shape of every error and of write acknowledgements.
//!
//! The Android SDK requires all four of `httpStatus`, `httpStatusCode`, `status` and `message`
//! (`HttpMessageResponseDTO`); a 401 without them makes the app call the box "no DHIS2 server".

use serde::{Deserialize, Serialize};

/// `status` of a WebMessage (DHIS2 `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

/// A DHIS2 WebMessage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebMessage {
    /// Reason phrase of the HTTP status, e.g. `"Unauthorized"`.
    pub http_status: String,
    pub http_status_code: u16,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_message: Option<String>,
    /// DHIS2 error code such as `E1005`, when one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// A typed payload (import report, object id) when the endpoint has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

impl WebMessage {
    /// A message for `code`; `status` is ERROR for 4xx/5xx and OK otherwise.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        WebMessage {
            http_status: reason_phrase(code).to_string(),
            http_status_code: code,
            status: if code >= 400 {
                Status::Error
            } else {
                Status::Ok
            },
            message: message.into(),
            dev_message: None,
            error_code: None,
            response: None,
        }
    }

    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    pub fn with_error_code(mut self, code: impl Into<String>) -> Self {
        self.error_code = Some(code.into());
        self
    }

    pub fn with_response(mut self, response: serde_json::Value) -> Self {
        self.response = Some(response);
        self
    }
}

/// The reason phrase DHIS2 (Spring's `HttpStatus`) writes in `httpStatus`.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ if code < 300 => "OK",
        _ if code < 500 => "Bad Request",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_sdk_fixture_shape() {
        let m = WebMessage::new(401, "Unauthorized");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"httpStatus":"Unauthorized","httpStatusCode":401,"status":"ERROR","message":"Unauthorized"})
        );
    }

    #[test]
    fn success_messages_are_ok() {
        let m = WebMessage::new(201, "Key created: 'config'");
        assert_eq!(m.status, Status::Ok);
        assert_eq!(m.http_status, "Created");
        let back: WebMessage = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn optional_fields_appear_when_set() {
        let m = WebMessage::new(409, "x")
            .with_status(Status::Warning)
            .with_error_code("E5002")
            .with_response(serde_json::json!({"responseType":"ImportReport"}));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["status"], "WARNING");
        assert_eq!(v["errorCode"], "E5002");
        assert_eq!(v["response"]["responseType"], "ImportReport");
    }
}
