//! The Thrift transports: `thrift_http` (`POST /api/traces`, the Jaeger collector's HTTP
//! endpoint) and the agent's UDP ports (`thrift_compact`, `thrift_binary`).
//!
//! HTTP reads bodies like the other HTTP receivers (`Content-Encoding` gzip, zstd, deflate,
//! capped sizes) and answers like the Zipkin receiver: `202 Accepted` as Jaeger does, `400` naming the
//! field for a malformed body, `415` for another content type, and the OTLP/HTTP receiver's
//! refusal mapping (429 + `Retry-After` when full, 503 when shutting down).
//!
//! UDP has no way to push back: the socket task only reads datagrams into a bounded queue
//! (`queue_size` packets); `workers` tasks decode and hand them to the consumer. A packet
//! larger than `max_packet_size`, one that finds the queue full, one that does not decode
//! and one the consumer refuses are dropped and reported through `on_drop` (the collector
//! counts them). UDP packets carry no tenant header: they go to the single tenant.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::super::export::{export, tenant_from_header, ExportError, Transport};
use super::super::http::{plain_text_refusal, read_and_decode, serve_router};
use super::super::{ReceiverError, TraceConsumer};
use super::thrift::{decode_agent_message, decode_batch, ThriftProtocol};
use super::{batches_to_otlp, JaegerDecodeError};
use crate::auth::{protect, AuthLayer};
use crate::otlp::OtlpExportRequest;
use crate::tenant::{TenantId, TENANT_HEADER};

/// The Jaeger collector's Thrift upload path.
pub const TRACES_PATH: &str = "/api/traces";

/// Content types of a Thrift binary `Batch`, as contrib accepts them.
const THRIFT_CONTENT_TYPES: [&str; 2] = [
    "application/x-thrift",
    "application/vnd.apache.thrift.binary",
];

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Pause after a failed UDP receive.
const RECEIVE_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Decodes a `thrift_http` body (a Thrift binary `Batch`) to OTLP.
///
/// # Errors
/// The body is not a well-formed `Batch`, or a span has a zero ID.
pub(crate) fn decode_thrift_http(body: &[u8]) -> Result<OtlpExportRequest, JaegerDecodeError> {
    batches_to_otlp(vec![decode_batch(body, ThriftProtocol::Binary)?])
}

// ---------------------------------------------------------------------- HTTP

struct HttpState {
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
}

/// The `thrift_http` route (`POST /api/traces`).
pub fn jaeger_http_router(
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
) -> Router {
    let state = Arc::new(HttpState {
        consumer,
        max_request_body_bytes,
    });
    Router::new()
        .route(TRACES_PATH, post(post_traces))
        // The handler caps the body itself.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves `thrift_http` on an already-bound listener until `shutdown` is cancelled, letting
/// in-flight requests finish.
///
/// # Errors
/// The server fails.
pub async fn serve_jaeger_http(
    listener: crate::listener::Incoming,
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
    auth: Option<AuthLayer>,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    serve_router(
        listener,
        protect(jaeger_http_router(consumer, max_request_body_bytes), auth),
        "jaeger thrift_http",
        shutdown,
    )
    .await
}

async fn post_traces(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match post_traces_inner(&state, &headers, body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(error) => plain_text_refusal(Transport::Jaeger, &error),
    }
}

async fn post_traces_inner(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ExportError> {
    check_content_type(headers)?;
    let tenant = tenant_from_header(headers.get(TENANT_HEADER).map(HeaderValue::as_bytes))?;
    let (request, num_bytes) =
        read_and_decode(headers, body, state.max_request_body_bytes, |bytes| {
            Ok(decode_thrift_http(bytes)?)
        })
        .await?;
    export(
        state.consumer.as_ref(),
        Transport::Jaeger,
        tenant,
        request,
        num_bytes,
    )
    .await?;
    Ok(())
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ExportError> {
    let raw = headers
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let media_type = raw.split(';').next().unwrap_or_default().trim();
    if THRIFT_CONTENT_TYPES
        .iter()
        .any(|accepted| media_type.eq_ignore_ascii_case(accepted))
    {
        Ok(())
    } else {
        Err(ExportError::UnsupportedJaegerContentType { found: raw })
    }
}

// ----------------------------------------------------------------------- UDP

/// `thrift_compact` / `thrift_binary` settings (contrib's keys and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// Packets waiting to be decoded; more are dropped.
    pub queue_size: usize,
    /// Larger packets are dropped.
    pub max_packet_size: usize,
    /// Tasks decoding packets and handing them on.
    pub workers: usize,
}

/// Why a UDP packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than `max_packet_size`.
    TooLarge,
    /// The packet queue was full.
    QueueFull,
    /// Not a well-formed `Agent.emitBatch` message.
    Invalid,
    /// The consumer refused the spans (pipeline full or shutting down).
    Refused,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLarge => "too_large",
            DropReason::QueueFull => "queue_full",
            DropReason::Invalid => "invalid",
            DropReason::Refused => "refused",
        }
    }
}

/// Binds a UDP socket, with `SO_RCVBUF` set to `socket_buffer_size` when it is not 0.
///
/// # Errors
/// The socket can't be created, configured or bound.
pub fn bind_udp(address: SocketAddr, socket_buffer_size: usize) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if socket_buffer_size > 0 {
        socket.set_recv_buffer_size(socket_buffer_size)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

/// Called for every dropped packet.
pub type OnDrop = Arc<dyn Fn(DropReason) + Send + Sync>;

/// Serves a Jaeger agent UDP port on an already-bound socket until `shutdown` is
/// cancelled; then stops reading and lets the workers finish the queued packets.
///
/// # Errors
/// The socket's address can't be read.
pub async fn serve_jaeger_udp(
    socket: UdpSocket,
    protocol: ThriftProtocol,
    consumer: Arc<dyn TraceConsumer>,
    options: UdpOptions,
    on_drop: OnDrop,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    let local_addr = socket.local_addr().map_err(ReceiverError::LocalAddr)?;
    let (sender, receiver) = mpsc::channel::<Bytes>(options.queue_size.max(1));
    let receiver = Arc::new(Mutex::new(receiver));
    let mut workers = Vec::with_capacity(options.workers.max(1));
    for _ in 0..options.workers.max(1) {
        let receiver = Arc::clone(&receiver);
        let consumer = Arc::clone(&consumer);
        let on_drop = Arc::clone(&on_drop);
        workers.push(tokio::spawn(async move {
            loop {
                let packet = receiver.lock().await.recv().await;
                let Some(packet) = packet else {
                    break;
                };
                if let Err(reason) = handle_packet(&packet, protocol, consumer.as_ref()).await {
                    on_drop(reason);
                }
            }
        }));
    }
    info!(addr = %local_addr, ?protocol, "jaeger udp receiver listening");
    // One byte more than allowed, to tell a packet of exactly the limit from a longer one.
    let mut buffer = vec![
        0_u8;
        options
            .max_packet_size
            .saturating_add(1)
            .min(MAX_DATAGRAM + 1)
    ];
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buffer) => received,
        };
        let length = match received {
            Ok((length, _peer)) => length,
            Err(error) => {
                // ICMP errors from earlier sends and the like; the socket stays usable. The
                // pause keeps a persistent error from spinning.
                debug!(addr = %local_addr, %error, "udp receive failed");
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        if length > options.max_packet_size {
            on_drop(DropReason::TooLarge);
            continue;
        }
        if sender
            .try_send(Bytes::copy_from_slice(&buffer[..length]))
            .is_err()
        {
            on_drop(DropReason::QueueFull);
        }
    }
    drop(sender);
    for worker in workers {
        if let Err(error) = worker.await {
            warn!(addr = %local_addr, %error, "jaeger udp worker failed");
        }
    }
    info!(addr = %local_addr, "jaeger udp receiver stopped");
    Ok(())
}

async fn handle_packet(
    packet: &[u8],
    protocol: ThriftProtocol,
    consumer: &dyn TraceConsumer,
) -> Result<(), DropReason> {
    let decoded = decode_agent_message(packet, protocol)
        .map_err(JaegerDecodeError::from)
        .and_then(|batch| batches_to_otlp(vec![batch]));
    let request = match decoded {
        Ok(request) => request,
        Err(error) => {
            debug!(transport = "jaeger", %error, "udp packet dropped");
            return Err(DropReason::Invalid);
        }
    };
    // Refusals are logged by `export` and counted as refused spans by the consumer.
    export(
        consumer,
        Transport::Jaeger,
        TenantId::single(),
        request,
        packet.len(),
    )
    .await
    .map(drop)
    .map_err(|_| DropReason::Refused)
}
