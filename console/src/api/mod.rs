//! The JSON API under `/api/v1` (documented in `openapi.json`, served at
//! `/api/v1/openapi.json`) — the same API the page uses.

mod act;
mod error;
mod findings;
mod fleet;
mod live;
mod openapi;
mod session;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, MethodRouter},
    Extension, Router,
};

pub use error::ApiError;

use crate::{
    app::Shared,
    auth::{self, Caller},
    config::Role,
};

/// Every route that needs a caller, with its handlers. `openapi.json` documents exactly
/// these (a test holds the two together).
fn protected_routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![
        ("/api/v1/session", get(session::current)),
        ("/api/v1/logout", post(session::logout)),
        ("/api/v1/overview", get(fleet::overview)),
        ("/api/v1/findings", get(findings::list)),
        ("/api/v1/findings/{id}", get(findings::detail)),
        ("/api/v1/events", get(findings::events)),
        ("/api/v1/hosts", get(fleet::hosts)),
        ("/api/v1/hosts/{host}/heartbeats", get(fleet::heartbeats)),
        ("/api/v1/audit", get(fleet::audit)),
        ("/api/v1/approvals", get(act::approvals)),
        ("/api/v1/approvals/{pending_id}", post(act::decide)),
        ("/api/v1/actions", post(act::action)),
        (
            "/api/v1/responder",
            get(act::responder).post(act::set_responder),
        ),
        ("/api/v1/stream", get(live::stream)),
    ]
}

/// Routes anyone may call.
fn public_routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![
        ("/api/v1/login", post(session::login)),
        ("/api/v1/openapi.json", get(openapi::document)),
    ]
}

pub fn router(app: Shared) -> Router {
    let protected = protected_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, route)| r.route(path, route))
        .route_layer(middleware::from_fn_with_state(app.clone(), guard));
    let public = public_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, route)| r.route(path, route));
    Router::new()
        .merge(protected)
        .merge(public)
        .merge(crate::web::router())
        .merge(metrics::router(app.metrics.registry()))
        .fallback(|| async { ApiError::not_found("no such page or API route") })
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// Authentication and, for state changes, the CSRF token and the role.
async fn guard(State(app): State<Shared>, mut request: Request, next: Next) -> Response {
    let Some(caller) = app.auth.caller(request.headers()) else {
        let mut response =
            ApiError::unauthorized("log in (POST /api/v1/login) or send a bearer token")
                .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"osprey-console\""),
        );
        return response;
    };
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes_state {
        if !auth::csrf_ok(&caller, request.headers()) {
            return ApiError::forbidden("missing or wrong CSRF token (send it in X-CSRF-Token)")
                .into_response();
        }
        let leaving = request.uri().path() == "/api/v1/logout";
        if caller.role == Role::Viewer && !leaving {
            return ApiError::forbidden(format!("{} is a viewer: read-only", caller.name))
                .into_response();
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The page loads nothing from elsewhere and runs no inline script: say so to the browser.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The caller as the guard found it.
pub type Who = Extension<Caller>;

/// A point in time from a query parameter: RFC 3339, or an age like `90s`, `15m`, `24h`,
/// `7d` (that long before now). Unix nanoseconds.
pub fn parse_time(text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if let Ok(t) = text.parse::<protocol::Timestamp>() {
        return Ok(t.unix_nanos());
    }
    let age = parse_age(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{text:?} is neither an RFC 3339 time nor an age like 15m, 24h, 7d"
        ))
    })?;
    Ok(protocol::Timestamp::now().unix_nanos() - age)
}

/// `90s`, `15m`, `24h`, `7d` in nanoseconds.
pub fn parse_age(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000_000)
}

#[cfg(test)]
mod tests;
