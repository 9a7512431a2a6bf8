//! Jaeger's gRPC collector API: the messages of `jaeger/api_v2/model.proto` and
//! `collector.proto` (hand-written prost structs, field numbers as in jaeger-idl) and the
//! `jaeger.api_v2.CollectorService/PostSpans` service, answered like the OTLP/gRPC receiver:
//! the tenant from `x-scope-orgid` metadata, refusals through [`crate::error::ErrorCode`]
//! (RESOURCE_EXHAUSTED + `RetryInfo` when full, INVALID_ARGUMENT naming the span for bad
//! data).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{Body, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use super::super::export::{export, log_refusal, tenant_from_header, ExportError, Transport};
use super::super::grpc::serve_grpc_routes;
use super::super::status::ErrorAnswer;
use super::super::{ReceiverError, TraceConsumer};
use super::{batches_to_otlp, JaegerDecodeError};
use crate::auth::{protect_grpc, AuthLayer};
use crate::tenant::TENANT_HEADER;

/// The gRPC method path.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// `jaeger.api_v2.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    /// `ValueType`: STRING 0, BOOL 1, INT64 2, FLOAT64 3, BINARY 4.
    #[prost(int32, tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `jaeger.api_v2.Log`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

/// `jaeger.api_v2.SpanRef`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// `SpanRefType`: CHILD_OF 0, FOLLOWS_FROM 1.
    #[prost(int32, tag = "3")]
    pub ref_type: i32,
}

/// `jaeger.api_v2.Process`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

/// `jaeger.api_v2.Span` (`process_id` and `warnings` are not needed and not declared, so
/// prost skips them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
}

/// `jaeger.api_v2.Batch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

/// `jaeger.api_v2.PostSpansRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansRequest {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

/// `jaeger.api_v2.PostSpansResponse` (empty).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct PostSpansResponse {}

// ------------------------------------------------------------ to the model

impl PostSpansRequest {
    /// The request in the receiver's model.
    ///
    /// # Errors
    /// A trace or span ID does not have 16 or 8 bytes.
    fn into_model(self) -> Result<super::Batch, JaegerDecodeError> {
        let Some(batch) = self.batch else {
            return Ok(super::Batch::default());
        };
        let spans = batch
            .spans
            .into_iter()
            .enumerate()
            .map(|(index, span)| span_to_model(index, span))
            .collect::<Result<_, _>>()?;
        Ok(super::Batch {
            process: batch.process.map(process_to_model),
            spans,
        })
    }
}

fn span_to_model(index: usize, span: Span) -> Result<super::Span, JaegerDecodeError> {
    let invalid = |field: &'static str, problem: String| JaegerDecodeError::Span {
        index,
        name: span.operation_name.clone(),
        field,
        problem,
    };
    let (trace_id_high, trace_id_low) =
        trace_id(&span.trace_id).map_err(|problem| invalid("trace_id", problem))?;
    let own_id = span_id(&span.span_id).map_err(|problem| invalid("span_id", problem))?;
    let references = span
        .references
        .iter()
        .enumerate()
        .map(|(ref_index, reference)| {
            let (high, low) = trace_id(&reference.trace_id).map_err(|problem| {
                invalid("references.trace_id", format!("[{ref_index}]: {problem}"))
            })?;
            let referenced = span_id(&reference.span_id).map_err(|problem| {
                invalid("references.span_id", format!("[{ref_index}]: {problem}"))
            })?;
            Ok(super::SpanRef {
                ref_type: reference.ref_type,
                trace_id_high: high,
                trace_id_low: low,
                span_id: referenced,
            })
        })
        .collect::<Result<_, JaegerDecodeError>>()?;
    let start = span
        .start_time
        .map_or(0, |t| unix_nanos(t.seconds, t.nanos));
    let duration = span.duration.map_or(0, |d| unix_nanos(d.seconds, d.nanos));
    Ok(super::Span {
        trace_id_high,
        trace_id_low,
        span_id: own_id,
        parent_span_id: 0,
        operation_name: span.operation_name,
        references,
        start_unix_nano: start as u64,
        end_unix_nano: start.wrapping_add(duration) as u64,
        tags: span.tags.into_iter().map(tag_to_model).collect(),
        logs: span
            .logs
            .into_iter()
            .map(|log| super::Log {
                time_unix_nano: log
                    .timestamp
                    .map_or(0, |t| unix_nanos(t.seconds, t.nanos) as u64),
                fields: log.fields.into_iter().map(tag_to_model).collect(),
            })
            .collect(),
        process: span.process.map(process_to_model),
    })
}

fn unix_nanos(seconds: i64, nanos: i32) -> i64 {
    seconds
        .wrapping_mul(1_000_000_000)
        .wrapping_add(i64::from(nanos))
}

/// Jaeger's IDs are big-endian: 16 bytes (high, low) for a trace, 8 for a span. Empty
/// reads as zero, as the protobuf default.
fn trace_id(bytes: &[u8]) -> Result<(u64, u64), String> {
    match bytes.len() {
        0 => Ok((0, 0)),
        16 => {
            let mut high = [0; 8];
            let mut low = [0; 8];
            high.copy_from_slice(&bytes[..8]);
            low.copy_from_slice(&bytes[8..]);
            Ok((u64::from_be_bytes(high), u64::from_be_bytes(low)))
        }
        other => Err(format!("must be 16 bytes, got {other}")),
    }
}

fn span_id(bytes: &[u8]) -> Result<u64, String> {
    match bytes.len() {
        0 => Ok(0),
        8 => {
            let mut id = [0; 8];
            id.copy_from_slice(bytes);
            Ok(u64::from_be_bytes(id))
        }
        other => Err(format!("must be 8 bytes, got {other}")),
    }
}

fn process_to_model(process: Process) -> super::Process {
    super::Process {
        service_name: process.service_name,
        tags: process.tags.into_iter().map(tag_to_model).collect(),
    }
}

fn tag_to_model(tag: KeyValue) -> super::Tag {
    use super::TagValue;
    let value = match tag.v_type {
        0 => TagValue::Str(tag.v_str),
        1 => TagValue::Bool(tag.v_bool),
        2 => TagValue::Long(tag.v_int64),
        3 => TagValue::Double(tag.v_float64),
        4 => TagValue::Binary(tag.v_binary),
        // gogo's `ValueType.String()` prints an unknown value as its number.
        other => TagValue::Unknown(other.to_string()),
    };
    super::Tag {
        key: tag.key,
        value,
    }
}

/// Translates a `PostSpansRequest` to OTLP.
///
/// # Errors
/// A malformed ID, or an all-zero trace or span ID.
pub(crate) fn post_spans_to_otlp(
    request: PostSpansRequest,
) -> Result<crate::otlp::OtlpExportRequest, JaegerDecodeError> {
    batches_to_otlp(vec![request.into_model()?])
}

// ------------------------------------------------------------------ service

/// `jaeger.api_v2.CollectorService`, for `Server::add_service`: accepts gzip and zstd
/// request compression and refuses messages over `max_recv_msg_bytes` (after
/// decompression), as the OTLP/gRPC receiver does.
#[derive(Clone)]
pub struct JaegerGrpcService {
    consumer: Arc<dyn TraceConsumer>,
    max_recv_msg_bytes: usize,
}

impl std::fmt::Debug for JaegerGrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JaegerGrpcService")
            .field("max_recv_msg_bytes", &self.max_recv_msg_bytes)
            .finish_non_exhaustive()
    }
}

pub fn jaeger_grpc_service(
    consumer: Arc<dyn TraceConsumer>,
    max_recv_msg_bytes: usize,
) -> JaegerGrpcService {
    JaegerGrpcService {
        consumer,
        max_recv_msg_bytes,
    }
}

impl NamedService for JaegerGrpcService {
    const NAME: &'static str = "jaeger.api_v2.CollectorService";
}

/// The unary handler tonic drives.
struct PostSpans(Arc<dyn TraceConsumer>);

impl UnaryService<PostSpansRequest> for PostSpans {
    type Response = PostSpansResponse;
    type Future = futures::future::BoxFuture<'static, Result<Response<PostSpansResponse>, Status>>;

    fn call(&mut self, request: Request<PostSpansRequest>) -> Self::Future {
        let consumer = Arc::clone(&self.0);
        Box::pin(async move { post_spans(consumer.as_ref(), request).await })
    }
}

async fn post_spans(
    consumer: &dyn TraceConsumer,
    request: Request<PostSpansRequest>,
) -> Result<Response<PostSpansResponse>, Status> {
    let refuse = |error: ExportError| {
        log_refusal(Transport::Jaeger, None, None, &error);
        ErrorAnswer::from_error(&error).grpc_status()
    };
    let header = request.metadata().get(TENANT_HEADER).map(|v| v.as_bytes());
    let tenant = tenant_from_header(header).map_err(refuse)?;
    let post = request.into_inner();
    let num_bytes = post.encoded_len();
    let otlp = post_spans_to_otlp(post).map_err(|error| refuse(ExportError::Jaeger(error)))?;
    match export(consumer, Transport::Jaeger, tenant, otlp, num_bytes).await {
        Ok(_) => Ok(Response::new(PostSpansResponse {})),
        Err(error) => Err(ErrorAnswer::from_error(&error).grpc_status()),
    }
}

impl<B> tower::Service<http::Request<B>> for JaegerGrpcService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != POST_SPANS_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let consumer = Arc::clone(&self.consumer);
        let max_bytes = self.max_recv_msg_bytes;
        Box::pin(async move {
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::default())
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(max_bytes), None);
            Ok(grpc.unary(PostSpans(consumer), request).await)
        })
    }
}

/// Serves `CollectorService` on an already-bound listener until `shutdown` is cancelled,
/// letting in-flight requests finish.
///
/// # Errors
/// The server fails.
pub async fn serve_jaeger_grpc(
    listener: crate::listener::Incoming,
    consumer: Arc<dyn TraceConsumer>,
    max_recv_msg_bytes: usize,
    auth: Option<AuthLayer>,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    serve_grpc_routes(
        listener,
        protect_grpc(
            Routes::new(jaeger_grpc_service(consumer, max_recv_msg_bytes)),
            auth,
        ),
        "jaeger grpc",
        max_recv_msg_bytes,
        shutdown,
    )
    .await
}
