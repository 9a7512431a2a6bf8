//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! tonic reads the frame, checks its length against `max_decoding_message_size` (OUT_OF_RANGE
//! when exceeded), decompresses gzip or zstd into a buffer capped at the same limit
//! (RESOURCE_EXHAUSTED without RetryInfo, so OTLP clients do not retry it) and decodes the
//! protobuf. The handler then takes the tenant from `x-scope-orgid` metadata and calls the
//! consumer; its refusals become statuses through [`crate::error::ErrorCode`], with a
//! `google.rpc.RetryInfo` detail when the consumer is full.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::info;

use super::export::{export, log_refusal, tenant_from_header, Transport};
use super::status::ErrorAnswer;
use super::{ReceiverError, TraceConsumer};
use crate::auth::{protect_grpc, AuthLayer};
use crate::listener::Incoming;
use crate::otlp::{OtlpExportRequest, OtlpExportResponse};
use crate::tenant::TENANT_HEADER;

/// The `TraceService` implementation, generic over whatever consumes the spans.
#[derive(Clone)]
pub struct GrpcTraceService {
    consumer: Arc<dyn TraceConsumer>,
}

impl std::fmt::Debug for GrpcTraceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTraceService").finish_non_exhaustive()
    }
}

impl GrpcTraceService {
    pub fn new(consumer: Arc<dyn TraceConsumer>) -> GrpcTraceService {
        GrpcTraceService { consumer }
    }
}

/// The tonic service with its limits, ready for `Server::add_service`: accepts gzip and zstd
/// request compression and refuses messages larger than `max_recv_msg_bytes` (after
/// decompression).
pub fn grpc_trace_service(
    consumer: Arc<dyn TraceConsumer>,
    max_recv_msg_bytes: usize,
) -> TraceServiceServer<GrpcTraceService> {
    TraceServiceServer::new(GrpcTraceService::new(consumer))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max_recv_msg_bytes)
}

#[tonic::async_trait]
impl TraceService for GrpcTraceService {
    async fn export(
        &self,
        request: Request<OtlpExportRequest>,
    ) -> Result<Response<OtlpExportResponse>, Status> {
        let header = request.metadata().get(TENANT_HEADER).map(|v| v.as_bytes());
        let tenant = match tenant_from_header(header) {
            Ok(tenant) => tenant,
            Err(error) => {
                log_refusal(Transport::Grpc, None, None, &error);
                return Err(ErrorAnswer::from_error(&error).grpc_status());
            }
        };
        let export_request = request.into_inner();
        // tonic does not expose the wire size; re-measuring is a cheap walk next to decoding.
        let num_bytes = export_request.encoded_len();
        match export(
            self.consumer.as_ref(),
            Transport::Grpc,
            tenant,
            export_request,
            num_bytes,
        )
        .await
        {
            Ok(response) => Ok(Response::new(response)),
            Err(error) => Err(ErrorAnswer::from_error(&error).grpc_status()),
        }
    }
}

/// Serves OTLP/gRPC on an already-bound listener (plain or TLS) until `shutdown` is
/// cancelled, then stops accepting and lets in-flight requests finish before returning.
/// With `auth`, every call needs one of its credentials.
///
/// # Errors
/// The server fails.
pub async fn serve_grpc(
    listener: Incoming,
    consumer: Arc<dyn TraceConsumer>,
    max_recv_msg_bytes: usize,
    auth: Option<AuthLayer>,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    serve_grpc_routes(
        listener,
        protect_grpc(
            Routes::new(grpc_trace_service(consumer, max_recv_msg_bytes)),
            auth,
        ),
        "otlp grpc",
        max_recv_msg_bytes,
        shutdown,
    )
    .await
}

/// Serves gRPC `routes` on an already-bound listener (plain or TLS) until `shutdown` is
/// cancelled, letting in-flight requests finish; shared by the OTLP and Jaeger gRPC
/// receivers.
///
/// # Errors
/// The server fails.
pub(crate) async fn serve_grpc_routes(
    listener: Incoming,
    routes: Routes,
    name: &'static str,
    max_recv_msg_bytes: usize,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    let local_addr = listener.local_addr();
    let tls = listener.is_tls();
    info!(addr = %local_addr, max_recv_msg_bytes, tls, "{name} receiver listening");
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(listener.into_stream(), shutdown.cancelled_owned())
        .await
        .map_err(ReceiverError::Grpc)?;
    info!(addr = %local_addr, "{name} receiver stopped");
    Ok(())
}
