//! Our own JSON body extractor: a malformed or oversized body gets a DHIS2 WebMessage, never
//! axum's plain-text rejection.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::ApiState;
use crate::error::ApiError;

/// A JSON request body.
pub struct Json<T>(pub T);

/// A JSON request body, not parsed yet (checked for its content type and size), for routes
/// that look at it before building the whole value (counting objects first).
pub struct JsonBytes(pub axum::body::Bytes);

impl FromRequest<ApiState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &ApiState) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim().to_string();
            if !(essence == "application/json"
                || essence.ends_with("+json")
                || essence == "text/json")
            {
                return Err(ApiError::UnsupportedMediaType(essence));
            }
        }
        let limit = state.config().max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        Ok(JsonBytes(bytes))
    }
}

impl<T: DeserializeOwned> FromRequest<ApiState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &ApiState) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse(&bytes).map(Json)
    }
}

/// Parses a JSON body (serde quotes offending strings whole; the WebMessage cuts them short).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("Invalid JSON payload: {e}")))
}
