//! The API's contract without the rest of the fleet: every documented route exists and
//! every route is documented; authentication, CSRF and roles.

use std::collections::BTreeSet;

use axum::{
    body::Body,
    http::{Request, StatusCode},
    Router,
};
use tower::ServiceExt;

use crate::{
    auth::{hash_password, sha256_hex, CSRF_HEADER, SESSION_COOKIE},
    config::{ConsoleConfig, Role, Token, User},
};

async fn router(dir: &std::path::Path) -> Router {
    let config = ConsoleConfig {
        database: dir.join("console.db"),
        // Nothing listens there: the client keeps retrying in the background.
        nats: crate::config::NatsSection {
            url: "nats://127.0.0.1:1".into(),
            credentials: None,
        },
        users: vec![User {
            name: "alice".into(),
            password_hash: hash_password("pw").unwrap(),
            role: Role::Operator,
        }],
        tokens: vec![Token {
            name: "dash".into(),
            sha256: sha256_hex(b"viewer-token"),
            role: Role::Viewer,
        }],
        ..ConsoleConfig::default()
    };
    super::router(crate::server::build(config).await.unwrap())
}

async fn call(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(super::openapi::DOCUMENT).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((path.clone(), method.to_uppercase()));
        }
    }
    out
}

#[tokio::test]
async fn every_documented_route_exists_and_every_route_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(dir.path()).await;
    let documented = documented();
    let paths: BTreeSet<&str> = documented.iter().map(|(p, _)| p.as_str()).collect();
    let mut routed: BTreeSet<&str> = super::protected_routes()
        .into_iter()
        .chain(super::public_routes())
        .map(|(p, _)| p)
        .collect();
    routed.insert("/metrics");
    assert_eq!(paths, routed, "openapi.json and the router disagree");
    for (path, method) in &documented {
        let uri = path.replace('{', "x").replace('}', "");
        let (status, _, body) = call(
            &router,
            Request::builder()
                .method(method.as_str())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn sessions_tokens_csrf_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(dir.path()).await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();

    let (status, headers, _) = call(&router, get("/api/v1/findings")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));

    let login = |password: &str| {
        Request::post("/api/v1/login")
            .header("content-type", "application/json")
            .body(Body::from(format!(
                r#"{{"username":"alice","password":"{password}"}}"#
            )))
            .unwrap()
    };
    let (status, headers, _) = call(&router, login("nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        !headers.contains_key("set-cookie"),
        "no session on a wrong password"
    );

    let (status, headers, body) = call(&router, login("pw")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    assert!(session.starts_with(SESSION_COOKIE));
    let csrf = serde_json::from_str::<serde_json::Value>(&body).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();

    let with_session = |uri: &str| {
        Request::get(uri)
            .header("cookie", &session)
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, body) = call(&router, with_session("/api/v1/findings?severity=high")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"items\":[]"), "{body}");
    let (status, _, _) = call(&router, with_session("/api/v1/findings?severity=severe")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let change = |csrf: Option<&str>, auth: Option<&str>| {
        let mut b = Request::post("/api/v1/responder").header("content-type", "application/json");
        if auth.is_none() {
            b = b.header("cookie", &session);
        }
        if let Some(c) = csrf {
            b = b.header(CSRF_HEADER, c);
        }
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(r#"{"dry_run":true}"#)).unwrap()
    };
    let (status, _, body) = call(&router, change(None, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    let (status, _, _) = call(&router, change(Some("wrong"), None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Past the guard: no operator key configured, so the console is read-only.
    let (status, _, body) = call(&router, change(Some(&csrf), None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let (status, _, body) = call(&router, change(None, Some("Bearer viewer-token"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("viewer"), "{body}");
    let (status, _, _) = call(
        &router,
        Request::get("/api/v1/session")
            .header("authorization", "Bearer viewer-token")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, headers, _) = call(&router, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
}
