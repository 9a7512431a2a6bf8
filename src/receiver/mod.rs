//! OTLP receivers shared by spoor-server and spoor-collector.
//!
//! Data path: gRPC `TraceService/Export` ([`grpc`]) or HTTP `POST /v1/traces` ([`http`]) →
//! size limits and decompression → decode (protobuf, or OTLP/JSON via [`json`]; off the
//! async workers for large bodies) → tenant from `x-scope-orgid` → [`TraceConsumer::consume`]
//! → answer: OTLP response with `partial_success` when spans were rejected, or a refusal
//! mapped through [`crate::error::ErrorCode`] (`RESOURCE_EXHAUSTED` + `RetryInfo` / 429 +
//! `Retry-After` when the consumer is full). Receivers never buffer: the consumer decides
//! whether the batch is accepted (and durable) or refused.
//!
//! The collector's Zipkin receiver ([`zipkin`], `POST /api/v2/spans`) translates Zipkin v2
//! JSON to the same OTLP request and shares the HTTP receiver's limits and refusal mapping.
//!
//! The collector's Jaeger receiver ([`jaeger`]) takes Jaeger's gRPC `PostSpans`, Thrift
//! over HTTP (`POST /api/traces`) and the agent's UDP Thrift ports, translated to OTLP.
//!
//! Both servers take an already-bound listener, so the binary can bind everything before it
//! reports readiness, and a [`CancellationToken`](tokio_util::sync::CancellationToken) that
//! stops accepting while in-flight requests complete.

use std::time::Duration;

use crate::error::{ErrorCode, ServiceError};
use crate::otlp::OtlpResourceSpans;
use crate::tenant::TenantId;

mod export;
pub mod grpc;
pub mod http;
pub mod jaeger;
pub mod json;
mod status;
pub mod zipkin;

pub use grpc::{grpc_trace_service, serve_grpc, GrpcTraceService};
pub use http::{http_router, serve_http};
pub use zipkin::{serve_zipkin, zipkin_router, ZipkinOptions};

/// Why a receiver stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("failed to read the listener address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("otlp grpc server failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
    #[error("otlp http server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// One decoded export request for one tenant.
#[derive(Debug, Clone)]
pub struct TraceBatch {
    pub tenant: TenantId,
    pub resource_spans: Vec<OtlpResourceSpans>,
    /// Encoded size of the request, for accounting and limits.
    pub num_bytes: usize,
}

/// The consumer's answer for an accepted batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Spans refused individually (OTLP `partial_success.rejected_spans`).
    pub rejected_spans: u64,
    /// Why they were refused (OTLP `partial_success.error_message`).
    pub error_message: String,
}

impl From<crate::otlp::validate::Rejected> for Accepted {
    fn from(rejected: crate::otlp::validate::Rejected) -> Accepted {
        Accepted {
            rejected_spans: rejected.num_spans,
            error_message: rejected.first_reason.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumeError {
    #[error("{what} is full, retry later")]
    Full {
        what: &'static str,
        retry_after: Duration,
    },
    /// A per-tenant limit refuses the request; the message names the limit.
    #[error("{message}")]
    Limited {
        message: String,
        retry_after: Duration,
    },
    #[error("shutting down")]
    Closed,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
}

impl ServiceError for ConsumeError {
    fn error_code(&self) -> ErrorCode {
        match self {
            ConsumeError::Full { retry_after, .. } => ErrorCode::ResourceExhausted {
                retry_after: *retry_after,
            },
            ConsumeError::Limited { retry_after, .. } => ErrorCode::ResourceExhausted {
                retry_after: *retry_after,
            },
            ConsumeError::Closed => ErrorCode::Unavailable,
            ConsumeError::Invalid(_) => ErrorCode::InvalidArgument,
            ConsumeError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The seam between receivers and whatever follows them. The server's ingest acks only
/// after the batch is durable in its WAL; the collector's pipeline head acks after a
/// bounded enqueue.
///
/// The returned future is dropped unfinished when the client disconnects mid-request, so an
/// implementation must not leave half-done work behind at an `.await` (hand durable writes
/// to a task or a channel if they must complete).
#[async_trait::async_trait]
pub trait TraceConsumer: Send + Sync + 'static {
    async fn consume(&self, batch: TraceBatch) -> Result<Accepted, ConsumeError>;
}
