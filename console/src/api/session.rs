//! Logging in and out: `/api/v1/login`, `/api/v1/logout`, `/api/v1/session`.

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Who};
use crate::{
    app::Shared,
    auth::{LoginError, SESSION_COOKIE},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

/// A JSON body is required: browsers cannot send one cross-site without CORS, which the
/// console never allows.
pub async fn login(State(app): State<Shared>, Json(body): Json<Login>) -> Response {
    match app.auth.login(&body.username, &body.password).await {
        Ok(session) => {
            app.metrics.login("ok");
            tracing::info!(user = %body.username, "login");
            let secure = if app.config.tls.is_some() {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                session.id,
                session.ttl.as_secs()
            );
            (
                [(header::SET_COOKIE, cookie)],
                Json(json!({
                    "user": body.username,
                    "role": session.role,
                    "csrf": session.csrf,
                })),
            )
                .into_response()
        }
        Err(e @ LoginError::Wrong) => {
            app.metrics.login("wrong");
            tracing::warn!(user = %body.username, "failed login");
            ApiError::unauthorized(e.to_string()).into_response()
        }
        Err(e @ LoginError::Throttled(_)) => {
            app.metrics.login("throttled");
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response()
        }
    }
}

pub async fn logout(State(app): State<Shared>, headers: HeaderMap) -> Response {
    app.auth.logout(&headers);
    (
        [(
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Json(json!({ "ok": true })),
    )
        .into_response()
}

/// Who is logged in, with the CSRF token the page sends on every change.
pub async fn current(State(app): State<Shared>, who: Who) -> Json<serde_json::Value> {
    Json(json!({
        "user": who.name,
        "role": who.role,
        "csrf": who.csrf,
        "can_act": app.key.is_some(),
    }))
}
