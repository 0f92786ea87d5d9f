//! API errors: always JSON `{"error": "...", ...}` with the right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String, field: Option<String> },
    #[error("{0}")]
    NotFound(String),
    /// The caller's roles do not allow it.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but cannot be answered as asked (a query that divides by
    /// zero or needs more than its memory limit).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), field: None }
    }

    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), field: Some(field.into()) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::Internal(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A query error by cause: what the asker wrote (400), what the data made impossible (422),
/// storage that did not answer (503), and bugs (500).
impl From<datafusion::error::DataFusionError> for ApiError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        let message = e.strip_backtrace();
        match e.find_root() {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) | E::Configuration(_) => {
                ApiError::bad_request(message)
            }
            E::ArrowError(..) | E::Execution(_) => ApiError::Unprocessable(message),
            E::ResourcesExhausted(_) => {
                ApiError::Unprocessable(format!("the query needs more memory than one query may use: {message}"))
            }
            E::ObjectStore(_) | E::IoError(_) => ApiError::Unavailable(format!("storage: {message}")),
            _ => ApiError::Internal(message),
        }
    }
}

/// The answer when a handler panicked (`CatchPanicLayer`): a JSON 500, logged with the
/// panic's message, while the server keeps serving.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %detail, "request handler panicked");
    ApiError::internal("internal error: the request handler failed; the server logged the details").into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({ "error": self.to_string(), "status": status.as_u16() });
        if let ApiError::BadRequest { field: Some(field), .. } = &self {
            body["field"] = json!(field);
        }
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        (status, Json(body)).into_response()
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no endpoint at {}", uri.path()))
}

pub type ApiResult<T> = Result<T, ApiError>;
