//! The API's error: an HTTP status with a JSON body `{"error": {"code", "message"}}`, plus
//! any details a route adds (e.g. a script's `diagnostics`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, e.g. `invalid_number`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// More fields of the `error` object (e.g. `diagnostics`); empty for most errors.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }

    /// This error with one more field `key` in its `error` object.
    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details.insert(key.to_string(), value);
        self
    }

    /// 400: the request is malformed or a value is invalid.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no key, or one that is unknown or revoked.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the key is valid but its role may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: nothing of that kind with that id in the caller's scope.
    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed but semantically invalid (e.g. a script with errors).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500: something on our side failed; the message is safe to show.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 502: a carrier or provider refused or failed.
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// 503: the database is unreachable or the gateway is shutting down.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(what) => {
                ApiError::conflict("conflict", format!("{what} already exists"))
            }
            StoreError::Invalid(message) => ApiError::bad_request("invalid", message),
            StoreError::Db { context, source } => {
                tracing::error!(%source, context, "database error");
                ApiError::unavailable("database", format!("the database failed while {context}"))
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<crate::store::catalog::Rejected> for ApiError {
    fn from(rejected: crate::store::catalog::Rejected) -> Self {
        ApiError::bad_request(rejected.code, rejected.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = self.details;
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(
            ApiError::from(StoreError::NotFound("call")).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from(StoreError::Conflict("phone number")).status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            ApiError::from(StoreError::Invalid("bad".into())).status,
            StatusCode::BAD_REQUEST
        );
    }
}
