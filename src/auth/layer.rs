//! The tower layer that enforces an [`AuthConfig`] on a listener.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{Either, Ready};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use super::{AuthConfig, Refusal};
use crate::error::ServiceError as _;
use crate::tenant::TENANT_HEADER;

/// Refusals are logged at debug level each, and summarised at warn level at most this
/// often: a client with a stale token retries forever and would flood the journal.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    listener: String,
    reason: String,
}

/// `<prefix>_auth_refused_requests_total{listener, reason}`, shared by every protected
/// listener of a binary.
#[derive(Clone, Debug, Default)]
pub struct AuthRefusals(Family<RefusalLabels, Counter>);

impl AuthRefusals {
    /// Registers the counter in a binary's registry.
    pub fn register(registry: &mut Registry) -> AuthRefusals {
        let refusals = AuthRefusals::default();
        registry.register(
            "auth_refused_requests",
            "Requests refused by authentication, per listener and reason",
            refusals.0.clone(),
        );
        refusals
    }

    fn count(&self, listener: &str, reason: &str) {
        self.0
            .get_or_create(&RefusalLabels {
                listener: listener.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The count for one listener and reason (tests, and nothing else).
    pub fn get(&self, listener: &str, reason: &str) -> u64 {
        self.0
            .get_or_create(&RefusalLabels {
                listener: listener.to_owned(),
                reason: reason.to_owned(),
            })
            .get()
    }
}

/// Requires a credential of `config` on every request except the exempted paths.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    shared: Arc<Shared>,
    /// Paths answered without authentication (the server's `/ready`, for probes).
    exempt_paths: &'static [&'static str],
}

#[derive(Debug)]
struct Shared {
    config: AuthConfig,
    /// Names the listener in logs and metrics (`api`, `otlp grpc`, `receivers.otlp grpc`).
    listener: String,
    refusals: AuthRefusals,
    www_authenticate: Vec<HeaderValue>,
    last_warning: parking_lot::Mutex<Option<Instant>>,
    refused_since_warning: AtomicU64,
}

impl AuthLayer {
    /// The layer for a listener, or `None` when `config` has no credentials, so an
    /// unconfigured listener is served exactly as before.
    pub fn for_listener(
        listener: impl Into<String>,
        config: &AuthConfig,
        refusals: &AuthRefusals,
    ) -> Option<AuthLayer> {
        if !config.is_enabled() {
            return None;
        }
        let mut www_authenticate = Vec::new();
        if config.accepts_bearer() {
            www_authenticate.push(HeaderValue::from_static("Bearer realm=\"spoor\""));
        }
        if config.accepts_basic() {
            www_authenticate.push(HeaderValue::from_static(
                "Basic realm=\"spoor\", charset=\"UTF-8\"",
            ));
        }
        Some(AuthLayer {
            shared: Arc::new(Shared {
                config: config.clone(),
                listener: listener.into(),
                refusals: refusals.clone(),
                www_authenticate,
                last_warning: parking_lot::Mutex::new(None),
                refused_since_warning: AtomicU64::new(0),
            }),
            exempt_paths: &[],
        })
    }

    /// Lets requests for exactly these paths through without a credential.
    #[must_use]
    pub fn exempt(mut self, paths: &'static [&'static str]) -> Self {
        self.exempt_paths = paths;
        self
    }
}

/// `router` behind `layer`, or unchanged without one.
pub fn protect(router: axum::Router, layer: Option<AuthLayer>) -> axum::Router {
    match layer {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// gRPC `routes` behind `layer`, or unchanged without one. Layered as an axum router, so
/// the listener code serving them stays the same with and without authentication.
pub fn protect_grpc(
    routes: tonic::service::Routes,
    layer: Option<AuthLayer>,
) -> tonic::service::Routes {
    match layer {
        Some(layer) => tonic::service::Routes::from(routes.into_axum_router().layer(layer)),
        None => routes,
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            shared: Arc::clone(&self.shared),
            exempt_paths: self.exempt_paths,
        }
    }
}

/// The service [`AuthLayer`] wraps around a router or a tonic server.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    shared: Arc<Shared>,
    exempt_paths: &'static [&'static str],
}

/// A response body the layer can answer a refusal with: axum's (HTTP listeners, and gRPC
/// routes served as an axum router) and tonic's (`Server::builder().layer(..)`).
pub trait RefusalBody {
    fn from_message(message: String) -> Self;
}

impl RefusalBody for axum::body::Body {
    fn from_message(message: String) -> Self {
        axum::body::Body::from(message)
    }
}

impl RefusalBody for tonic::body::Body {
    fn from_message(message: String) -> Self {
        tonic::body::Body::new(http_body_util::Full::new(Bytes::from(message)))
    }
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for AuthService<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    ResponseBody: RefusalBody,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<ResponseBody>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        if self.exempt_paths.contains(&request.uri().path()) {
            return Either::Right(self.inner.call(request));
        }
        match self.shared.config.authenticate(request.headers()) {
            Ok(Some(tenant)) => {
                // Tenant names are validated to header-safe characters.
                if let Ok(value) = HeaderValue::from_str(tenant.as_str()) {
                    request.headers_mut().insert(TENANT_HEADER, value);
                }
                Either::Right(self.inner.call(request))
            }
            Ok(None) => Either::Right(self.inner.call(request)),
            Err(refusal) => {
                let is_grpc = is_grpc(&request);
                self.shared.record(&refusal, peer(&request));
                Either::Left(futures::future::ready(Ok(self
                    .shared
                    .refusal_response(&refusal, is_grpc))))
            }
        }
    }
}

impl Shared {
    fn record(&self, refusal: &Refusal, peer: Option<SocketAddr>) {
        let reason = refusal.reason();
        self.refusals.count(&self.listener, reason);
        // The presented credential is never logged, not even in part.
        tracing::debug!(listener = %self.listener, peer = ?peer, reason, "request refused by authentication");
        let refused = self.refused_since_warning.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock();
        if last.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
            *last = Some(Instant::now());
            self.refused_since_warning.store(0, Ordering::Relaxed);
            tracing::warn!(
                listener = %self.listener,
                peer = ?peer,
                reason,
                refused,
                "requests refused by authentication (logged at most once a minute; \
                 the auth_refused_requests counter has them all)"
            );
        }
    }

    fn refusal_response<B: RefusalBody>(&self, refusal: &Refusal, is_grpc: bool) -> Response<B> {
        let code = refusal.error_code();
        let message = refusal.client_message();
        let mut response = if is_grpc {
            // A trailers-only gRPC answer: HTTP 200 with the status in the headers, which
            // every gRPC client reads as the call's status.
            let mut response = Response::new(B::from_message(String::new()));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from(code.grpc() as i32));
            if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
                headers.insert("grpc-message", value);
            }
            response
        } else {
            let mut response = Response::new(B::from_message(format!("{message}\n")));
            *response.status_mut() = code.http();
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        };
        if code.http() == StatusCode::UNAUTHORIZED {
            for value in &self.www_authenticate {
                response
                    .headers_mut()
                    .append(WWW_AUTHENTICATE, value.clone());
            }
        }
        response
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// The client's address: tonic puts it in the request; axum only when served with
/// connect info.
fn peer<B>(request: &Request<B>) -> Option<SocketAddr> {
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
    {
        return info.remote_addr();
    }
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// gRPC's `grpc-message` encoding: printable ASCII except `%` as is, the rest as `%XX`.
pub(super) fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
