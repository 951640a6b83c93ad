//! The OpenAPI document, written by hand next to the routes it describes (`tests.rs` checks
//! that both name the same paths and methods).

use axum::{http::header, response::IntoResponse};

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
