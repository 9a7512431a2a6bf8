use std::convert::Infallible;
use std::io::Write as _;

use axum::body::Body;
use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tower::{Layer as _, ServiceExt as _};

use super::layer::percent_encode;
use super::*;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("valid tenant")
}

fn config() -> AuthConfig {
    AuthConfig {
        credentials: vec![
            Credential::Bearer {
                token: Secret::for_test("s3cret-token"),
                tenant: None,
            },
            Credential::Bearer {
                token: Secret::for_test("acme-token"),
                tenant: Some(tenant("acme")),
            },
            Credential::Basic {
                username: "grafana".to_owned(),
                password: Secret::for_test("hunter2"),
                tenant: None,
            },
        ],
    }
}

fn headers(authorization: Option<&str>, org: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("ascii"));
    }
    if let Some(value) = org {
        headers.insert(TENANT_HEADER, HeaderValue::from_str(value).expect("ascii"));
    }
    headers
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn constant_time_eq_compares_whole_values() {
    assert!(bool::from(constant_time_eq(b"abc", b"abc")));
    assert!(!bool::from(constant_time_eq(b"abd", b"abc")));
    assert!(!bool::from(constant_time_eq(b"ab", b"abc")));
    assert!(!bool::from(constant_time_eq(b"abcd", b"abc")));
    // A prefix padded with the zero bytes the comparison substitutes must not match.
    assert!(!bool::from(constant_time_eq(b"abc\0", b"abc")));
    assert!(!bool::from(constant_time_eq(b"", b"abc")));
    assert!(bool::from(constant_time_eq(b"", b"")));
}

#[test]
fn bearer_and_basic_credentials_are_accepted() {
    let config = config();
    assert_eq!(
        config.authenticate(&headers(Some("Bearer s3cret-token"), None)),
        Ok(None)
    );
    // The scheme is case-insensitive (RFC 9110); surrounding blanks are ignored.
    assert_eq!(
        config.authenticate(&headers(Some("bearer   s3cret-token "), None)),
        Ok(None)
    );
    assert_eq!(
        config.authenticate(&headers(Some(&basic("grafana", "hunter2")), None)),
        Ok(None)
    );
}

#[test]
fn every_bad_credential_gets_the_same_message() {
    let config = config();
    let cases = [
        None,
        Some("Bearer wrong".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Token s3cret-token".to_owned()),
        Some("Basic !!!not-base64".to_owned()),
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("no-colon")
        )),
        Some(basic("grafana", "wrong")),
        Some(basic("nobody", "hunter2")),
        // A bearer token presented as a basic password, and the other way round.
        Some(basic("grafana", "s3cret-token")),
        Some("Bearer hunter2".to_owned()),
    ];
    for case in cases {
        let refusal = config
            .authenticate(&headers(case.as_deref(), None))
            .expect_err("refused");
        assert_eq!(
            refusal.client_message(),
            UNAUTHENTICATED_MESSAGE,
            "{case:?}"
        );
        assert_eq!(refusal.error_code(), ErrorCode::Unauthenticated);
    }
}

#[test]
fn tenant_comes_from_the_token_and_a_conflicting_header_is_refused() {
    let config = config();
    assert_eq!(
        config.authenticate(&headers(Some("Bearer acme-token"), None)),
        Ok(Some(tenant("acme")))
    );
    assert_eq!(
        config.authenticate(&headers(Some("Bearer acme-token"), Some("acme"))),
        Ok(Some(tenant("acme")))
    );
    let refusal = config
        .authenticate(&headers(Some("Bearer acme-token"), Some("other")))
        .expect_err("conflict");
    assert_eq!(refusal.error_code(), ErrorCode::PermissionDenied);
    let message = refusal.client_message();
    assert!(
        message.contains("\"other\"") && message.contains("acme"),
        "{message}"
    );
    assert!(!message.contains("acme-token"), "{message}");
    // A credential without a tenant keeps trusting the header.
    assert_eq!(
        config.authenticate(&headers(Some("Bearer s3cret-token"), Some("other"))),
        Ok(None)
    );
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let rendered = format!("{:?}", config());
    assert!(!rendered.contains("s3cret-token"), "{rendered}");
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(rendered.contains("<redacted>"));
    let client = ClientAuth::Basic {
        username: "collector".to_owned(),
        password: Secret::for_test("hunter2"),
    };
    let rendered = format!("{client:?}");
    assert!(!rendered.contains("hunter2") && rendered.contains("collector"));
    let value = client.header_value().expect("header");
    assert!(value.is_sensitive());
    assert!(!format!("{value:?}").contains("Basic"));
}

#[test]
fn client_auth_builds_the_authorization_header() {
    let bearer = ClientAuth::Bearer {
        scheme: "Bearer".to_owned(),
        token: Secret::for_test("t0k"),
    };
    assert_eq!(bearer.header_value().expect("header"), "Bearer t0k");
    let bare = ClientAuth::Bearer {
        scheme: String::new(),
        token: Secret::for_test("t0k"),
    };
    assert_eq!(bare.header_value().expect("header"), "t0k");
    let basic_auth = ClientAuth::Basic {
        username: "grafana".to_owned(),
        password: Secret::for_test("hunter2"),
    };
    let sent = basic_auth.header_value().expect("header");
    assert_eq!(sent, basic("grafana", "hunter2").as_str());
    // What a client sends is what a listener accepts.
    assert_eq!(
        config().authenticate(&headers(Some(sent.to_str().expect("ascii")), None)),
        Ok(None)
    );
}

#[test]
fn secret_files_lose_their_trailing_newline_and_must_not_be_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(b"abc def\r\n"))
        .expect("write");
    assert_eq!(Secret::from_file(&path).expect("read").expose(), "abc def");

    std::fs::write(&path, "\n").expect("write");
    let error = Secret::from_file(&path).expect_err("empty");
    assert!(matches!(error, SecretError::Empty { .. }));
    assert!(error.to_string().contains("token"), "{error}");

    let missing = dir.path().join("missing");
    let error = Secret::from_file(&missing).expect_err("missing");
    assert!(error.to_string().contains("missing"), "{error}");

    std::fs::write(&path, b"\xff\xfe secret").expect("write");
    let error = Secret::from_file(&path).expect_err("binary");
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[test]
fn grpc_messages_are_percent_encoded() {
    assert_eq!(percent_encode("a b"), "a b");
    assert_eq!(percent_encode("100%"), "100%25");
    assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
}

fn echo_tenant() -> axum::Router {
    axum::Router::new()
        .route(
            "/api/search",
            axum::routing::get(|headers: HeaderMap| async move {
                headers
                    .get(TENANT_HEADER)
                    .map(|value| value.to_str().unwrap_or("?").to_owned())
                    .unwrap_or_default()
            }),
        )
        .route("/ready", axum::routing::get(|| async { "ready" }))
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn the_layer_refuses_http_and_grpc_and_sets_the_tenant() {
    let refusals = AuthRefusals::default();
    let layer = AuthLayer::for_listener("api", &config(), &refusals).map(|l| l.exempt(&["/ready"]));
    let router = protect(echo_tenant(), layer);

    let request = |path: &str, authorization: Option<&str>, grpc: bool| {
        let mut builder = Request::get(path);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        if grpc {
            builder = builder.header("content-type", "application/grpc+proto");
        }
        builder.body(Body::empty()).expect("request")
    };

    let response = router
        .clone()
        .oneshot(request("/api/search", None, false))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .collect();
    assert_eq!(challenges.len(), 2);
    assert_eq!(body_text(response).await.trim(), UNAUTHENTICATED_MESSAGE);

    let response = router
        .clone()
        .oneshot(request("/api/search", Some("Bearer nope"), true))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(response.headers()["grpc-message"], UNAUTHENTICATED_MESSAGE);

    let response = router
        .clone()
        .oneshot(request("/ready", None, false))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);

    let response = router
        .clone()
        .oneshot(request("/api/search", Some("Bearer acme-token"), false))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "acme");

    assert_eq!(refusals.get("api", "missing"), 1);
    assert_eq!(refusals.get("api", "invalid"), 1);
}

#[tokio::test]
async fn the_layer_works_on_tonic_bodies() {
    let refusals = AuthRefusals::default();
    let layer = AuthLayer::for_listener("otlp grpc", &config(), &refusals).expect("enabled");
    let inner = tower::service_fn(|_request: Request<tonic::body::Body>| async {
        Ok::<_, Infallible>(Response::new(tonic::body::Body::default()))
    });
    let request = Request::post("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        .header("content-type", "application/grpc")
        .header(AUTHORIZATION, "Bearer acme-token")
        .header(TENANT_HEADER, "intruder")
        .body(tonic::body::Body::default())
        .expect("request");
    let response = layer
        .layer(inner)
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.headers()["grpc-status"], "7");
    assert_eq!(refusals.get("otlp grpc", "tenant_conflict"), 1);
}

#[test]
fn no_credentials_means_no_layer() {
    assert!(
        AuthLayer::for_listener("api", &AuthConfig::default(), &AuthRefusals::default()).is_none()
    );
}
