//! Request extractors whose rejections are the API's JSON errors: a body that is not JSON, has
//! an unknown field or a wrong type, a bad query string or a malformed id each get a precise
//! 4xx `{"error": {"code", "message"}}` naming what is wrong.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body (request types use `#[serde(deny_unknown_fields)]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// The API error for a body axum's JSON extractor refused.
pub fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {}", source_text(&e)),
        ),
        JsonRejection::JsonDataError(e) => ApiError::unprocessable(
            "invalid_body",
            format!("the body does not fit: {}", source_text(&e)),
        ),
        JsonRejection::BytesRejection(e) => ApiError::new(
            e.status(),
            "unreadable_body",
            format!("the body could not be read: {}", e.body_text()),
        ),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// The innermost message of an extractor error (serde's, with the field path and position).
fn source_text(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message = inner.to_string();
        source = inner.source();
    }
    message
}

/// A query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    match rejection {
        QueryRejection::FailedToDeserializeQueryString(e) => ApiError::bad_request(
            "invalid_query",
            format!("bad query string: {}", source_text(&e)),
        ),
        other => ApiError::bad_request("invalid_query", other.body_text()),
    }
}

/// Path parameters (ids are UUIDs: a malformed one is a 400 naming it).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(e) => ApiError::bad_request(
            "invalid_id",
            format!("bad path parameter: {}", e.body_text()),
        ),
        other => ApiError::internal(other.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body1 {
        to: String,
    }

    async fn extract(content_type: Option<&str>, body: &str) -> Result<ApiJson<Body1>, ApiError> {
        let mut builder = axum::http::Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let request = builder.body(Body::from(body.to_owned())).unwrap();
        ApiJson::<Body1>::from_request(request, &()).await
    }

    #[tokio::test]
    async fn bodies_are_refused_with_a_reason() {
        assert!(
            extract(Some("application/json"), r#"{"to":"+1"}"#)
                .await
                .is_ok()
        );
        let e = extract(None, r#"{"to":"+1"}"#).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (415, "unsupported_media_type"));
        let e = extract(Some("application/json"), "{").await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "malformed_json"));
        let e = extract(Some("application/json"), r#"{"to":"+1","x":1}"#)
            .await
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_body"));
        assert!(e.message.contains("unknown field `x`"), "{}", e.message);
        let e = extract(Some("application/json"), r#"{"to":5}"#)
            .await
            .unwrap_err();
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }
}
