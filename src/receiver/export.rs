//! The part of an export both transports share: tenant from the header, the empty-request
//! shortcut, the call into the consumer, `partial_success`, and the one place refusals are
//! logged (metrics will hook into [`log_refusal`] so the log line and the counter never drift).

use std::io;

use tracing::{debug, warn};

use super::jaeger::JaegerDecodeError;
use super::json::JsonDecodeError;
use super::zipkin::ZipkinDecodeError;
use super::{ConsumeError, TraceBatch, TraceConsumer};
use crate::error::{ErrorCode, ServiceError};
use crate::otlp::{count_spans, OtlpExportRequest, OtlpExportResponse, OtlpPartialSuccess};
use crate::tenant::{TenantError, TenantId, TENANT_HEADER};

/// Which receiver handled a request, for log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Grpc,
    Http,
    Zipkin,
    Jaeger,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::Zipkin => "zipkin",
            Transport::Jaeger => "jaeger",
        }
    }
}

/// Why one export request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    #[error(
        "unsupported content type {found:?}: expected application/x-protobuf or application/json"
    )]
    UnsupportedContentType { found: String },
    #[error("unsupported content encoding {found:?}: expected gzip, zstd, deflate or identity")]
    UnsupportedContentEncoding { found: String },
    #[error("unsupported content type {found:?}: the zipkin receiver accepts application/json (Zipkin v2 JSON)")]
    UnsupportedZipkinContentType { found: String },
    #[error("unsupported content type {found:?}: the jaeger receiver accepts application/x-thrift or application/vnd.apache.thrift.binary (a Thrift binary Batch)")]
    UnsupportedJaegerContentType { found: String },
    #[error("invalid {TENANT_HEADER} header: {0}")]
    Tenant(#[from] TenantError),
    #[error("invalid {TENANT_HEADER} header: not valid UTF-8")]
    TenantNotUtf8,
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("failed to read request body: {0}")]
    ReadBody(String),
    #[error("failed to decompress {encoding} request body: {source}")]
    Decompress {
        encoding: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to decode protobuf request body: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("failed to decode JSON request body: {0}")]
    Json(#[from] JsonDecodeError),
    #[error("failed to decode Zipkin request body: {0}")]
    Zipkin(#[from] ZipkinDecodeError),
    #[error("failed to decode Jaeger request: {0}")]
    Jaeger(#[from] JaegerDecodeError),
    #[error("request decoding task failed: {0}")]
    DecodeTask(String),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

impl ServiceError for ExportError {
    fn error_code(&self) -> ErrorCode {
        match self {
            // The HTTP receiver answers these two with 415, which the shared table has no
            // code for; gRPC never produces them (tonic negotiates its own encodings).
            ExportError::UnsupportedContentType { .. }
            | ExportError::UnsupportedZipkinContentType { .. }
            | ExportError::UnsupportedJaegerContentType { .. }
            | ExportError::UnsupportedContentEncoding { .. } => ErrorCode::InvalidArgument,
            ExportError::Tenant(_)
            | ExportError::TenantNotUtf8
            | ExportError::ReadBody(_)
            | ExportError::Decompress { .. }
            | ExportError::Protobuf(_)
            | ExportError::Json(_)
            | ExportError::Zipkin(_)
            | ExportError::Jaeger(_) => ErrorCode::InvalidArgument,
            ExportError::BodyTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ExportError::DecodeTask(_) => ErrorCode::Internal,
            ExportError::Consume(error) => error.error_code(),
        }
    }
}

/// Reads the tenant from the raw `x-scope-orgid` value: absent or empty means the single
/// tenant, anything else must be a valid tenant name.
pub(crate) fn tenant_from_header(value: Option<&[u8]>) -> Result<TenantId, ExportError> {
    let value = value
        .map(std::str::from_utf8)
        .transpose()
        .map_err(|_| ExportError::TenantNotUtf8)?;
    Ok(TenantId::from_header(value)?)
}

/// Hands a decoded request to the consumer and turns its answer into the OTLP response.
/// Consumer refusals are logged here, where the span count is known.
pub(crate) async fn export(
    consumer: &dyn TraceConsumer,
    transport: Transport,
    tenant: TenantId,
    request: OtlpExportRequest,
    num_bytes: usize,
) -> Result<OtlpExportResponse, ConsumeError> {
    let num_spans = count_spans(&request.resource_spans);
    if num_spans == 0 {
        // Nothing to store; some SDKs send empty exports as keep-alives, and they must not
        // cost a WAL write or a queue slot.
        return Ok(OtlpExportResponse::default());
    }
    let batch = TraceBatch {
        tenant: tenant.clone(),
        resource_spans: request.resource_spans,
        num_bytes,
    };
    match consumer.consume(batch).await {
        Ok(accepted) if accepted.rejected_spans == 0 => Ok(OtlpExportResponse::default()),
        Ok(accepted) => {
            debug!(
                transport = transport.as_str(),
                tenant = tenant.as_str(),
                num_spans,
                rejected_spans = accepted.rejected_spans,
                error = %accepted.error_message,
                "spans rejected"
            );
            Ok(OtlpExportResponse {
                partial_success: Some(OtlpPartialSuccess {
                    rejected_spans: i64::try_from(accepted.rejected_spans).unwrap_or(i64::MAX),
                    error_message: accepted.error_message,
                }),
            })
        }
        Err(error) => {
            log_refusal(transport, Some(&tenant), Some(num_spans), &error);
            Err(error)
        }
    }
}

/// Logs a refused export. Client mistakes and backpressure are routine (and would flood the
/// journal under load), so they go to debug; only our own failures are warnings.
pub(crate) fn log_refusal(
    transport: Transport,
    tenant: Option<&TenantId>,
    num_spans: Option<usize>,
    error: &dyn ServiceError,
) {
    let tenant = tenant.map(TenantId::as_str);
    match error.error_code() {
        ErrorCode::Internal => warn!(
            transport = transport.as_str(),
            tenant,
            num_spans,
            error = %error,
            "export failed"
        ),
        _ => debug!(
            transport = transport.as_str(),
            tenant,
            num_spans,
            error = %error,
            "export refused"
        ),
    }
}
