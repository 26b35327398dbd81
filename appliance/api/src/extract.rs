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

impl<T: DeserializeOwned> FromRequest<ApiState> for Json<T> {
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
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| ApiError::BadRequest(format!("Invalid JSON payload: {e}")))
    }
}
