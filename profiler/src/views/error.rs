use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

/// A rejected query parameter: 400 with a JSON body naming it.
#[derive(Debug, PartialEq, Eq)]
pub struct BadParam {
    pub param: String,
    pub message: String,
}

impl BadParam {
    pub fn new(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: param.to_string(),
            message: message.into(),
        }
    }
}

impl IntoResponse for BadParam {
    fn into_response(self) -> Response {
        let body = json!({
            "error": format!("invalid query parameter '{}': {}", self.param, self.message),
            "param": self.param,
        });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}
