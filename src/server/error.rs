//! Errors of the HTTP API and how each API spells them.
//!
//! Owns: the status code of every failure and the two error shapes, OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` and Ollama's
//! `{"error": "message"}`. Must not touch: the engine's internals or the
//! store: an engine failure arrives as its [`ErrorKind`] and becomes a
//! status in [`ApiError::from_engine`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::ErrorKind;

/// Which API a route belongs to, and so which error shape it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Ollama,
}

impl Flavor {
    /// `/api/...` is Ollama's; everything else answers in OpenAI's shape.
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/api/") {
            Flavor::Ollama
        } else {
            Flavor::OpenAi
        }
    }
}

/// A failed request: a status, a message for the client, and the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds a client should wait before retrying (503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn busy(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// The one place an engine failure becomes an HTTP status: from its
    /// kind, as the worker process reports it.
    pub fn from_engine(kind: ErrorKind, message: impl Into<String>) -> Self {
        match kind {
            ErrorKind::InvalidRequest => Self::bad_request(message),
            ErrorKind::UnusableModel => Self::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            ErrorKind::Busy | ErrorKind::ShuttingDown | ErrorKind::Cancelled => Self::busy(message),
            ErrorKind::Internal => Self::internal(message),
        }
    }

    /// OpenAI's `type` field for this status.
    fn openai_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::SERVICE_UNAVAILABLE => "server_busy",
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body in `flavor`'s shape.
    pub fn body(&self, flavor: Flavor) -> serde_json::Value {
        match flavor {
            Flavor::Ollama => json!({ "error": self.message }),
            Flavor::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.openai_type(),
                    "param": null,
                    "code": self.status.as_u16().to_string(),
                }
            }),
        }
    }

    pub fn into_response_for(self, flavor: Flavor) -> Response {
        let mut response = (self.status, axum::Json(self.body(flavor))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_gets_its_own_shape() {
        let error = ApiError::not_found("model 'x' not found");
        assert_eq!(
            error.body(Flavor::Ollama),
            json!({"error": "model 'x' not found"})
        );
        let openai = error.body(Flavor::OpenAi);
        assert_eq!(openai["error"]["message"], "model 'x' not found");
        assert_eq!(openai["error"]["type"], "not_found_error");
    }

    #[test]
    fn flavor_follows_the_path() {
        assert_eq!(Flavor::for_path("/api/chat"), Flavor::Ollama);
        assert_eq!(Flavor::for_path("/v1/models"), Flavor::OpenAi);
        assert_eq!(Flavor::for_path("/health"), Flavor::OpenAi);
    }

    #[test]
    fn busy_carries_retry_after() {
        let response = ApiError::busy("full").into_response_for(Flavor::OpenAi);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
