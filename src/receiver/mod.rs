//! OTLP receivers shared by spoor-server and spoor-collector.
//!
//! Data path: gRPC `TraceService/Export` or HTTP `POST /v1/traces` → decode (off the
//! async workers for large bodies) → tenant from `x-scope-orgid` → [`TraceConsumer::consume`]
//! → status mapped through [`crate::error::ErrorCode`]. Receivers never buffer: the
//! consumer decides whether the batch is accepted (and durable) or refused.

use std::time::Duration;

use crate::error::{ErrorCode, ServiceError};
use crate::otlp::OtlpResourceSpans;
use crate::tenant::TenantId;

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

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumeError {
    #[error("{what} is full, retry later")]
    Full {
        what: &'static str,
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
            ConsumeError::Closed => ErrorCode::Unavailable,
            ConsumeError::Invalid(_) => ErrorCode::InvalidArgument,
            ConsumeError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The seam between receivers and whatever follows them. The server's ingest acks only
/// after the batch is durable in its WAL; the collector's pipeline head acks after a
/// bounded enqueue.
#[async_trait::async_trait]
pub trait TraceConsumer: Send + Sync + 'static {
    async fn consume(&self, batch: TraceBatch) -> Result<Accepted, ConsumeError>;
}
