//! OTLP/HTTP receiver: `POST /v1/traces`
//! (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>).
//!
//! Order of checks, cheapest first so a bad request costs as little as possible:
//! content type (415) → tenant header (400) → content encoding (415) → declared length (413)
//! → body read, capped at `max_request_body_bytes` (413) → decompress, output capped at the
//! same limit so a zip bomb stops at the cap instead of allocating (413) → decode protobuf
//! or OTLP/JSON (400) → consumer. Decompressing and decoding anything but small bodies runs
//! on the blocking pool so the async workers keep serving other connections.
//!
//! Responses use the request's content type: an `ExportTraceServiceResponse` on success, a
//! `google.rpc.Status` on failure (with `Retry-After` on 429). The one exception is an
//! unsupported content type, answered in `text/plain` because there is no agreed format.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::export::{export, log_refusal, tenant_from_header, ExportError, Transport};
use super::json;
use super::status::{retry_after_header_secs, ErrorAnswer};
use super::{ReceiverError, TraceConsumer};
use crate::auth::{protect, AuthLayer};
use crate::error::ServiceError;
use crate::listener::Incoming;
use crate::otlp::{OtlpExportRequest, OtlpExportResponse};
use crate::tenant::{TenantId, TENANT_HEADER};

/// The OTLP/HTTP traces path.
pub const TRACES_PATH: &str = "/v1/traces";

const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
const JSON_CONTENT_TYPE: &str = "application/json";

/// Bodies whose decoding work is estimated above this many bytes are decoded on the blocking
/// pool; below it, the hop would cost more than the work (well under the ~500 µs budget).
const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;

/// Assumed expansion of a compressed body when estimating decode work: OTLP protobuf
/// compresses about 5-10x, JSON more.
const ASSUMED_COMPRESSION_RATIO: usize = 8;

/// Smallest zstd window accepted regardless of the body limit: what `zstd -19` uses, so
/// ordinary clients always fit.
const MIN_ZSTD_WINDOW_LOG: u32 = 23;
/// zstd's own default ceiling (128 MiB window).
const MAX_ZSTD_WINDOW_LOG: u32 = 27;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireFormat {
    Protobuf,
    Json,
}

impl WireFormat {
    fn from_headers(headers: &HeaderMap) -> Result<WireFormat, ExportError> {
        let raw = headers
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default();
        // Parameters such as `charset=utf-8` do not change the format.
        let media_type = raw.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case(PROTOBUF_CONTENT_TYPE) {
            Ok(WireFormat::Protobuf)
        } else if media_type.eq_ignore_ascii_case(JSON_CONTENT_TYPE) {
            Ok(WireFormat::Json)
        } else {
            Err(ExportError::UnsupportedContentType { found: raw })
        }
    }

    fn content_type(self) -> HeaderValue {
        match self {
            WireFormat::Protobuf => HeaderValue::from_static(PROTOBUF_CONTENT_TYPE),
            WireFormat::Json => HeaderValue::from_static(JSON_CONTENT_TYPE),
        }
    }

    fn decode(self, body: &[u8]) -> Result<OtlpExportRequest, ExportError> {
        match self {
            WireFormat::Protobuf => Ok(OtlpExportRequest::decode(body)?),
            WireFormat::Json => Ok(json::decode_export_request(body)?),
        }
    }

    fn encode_response(self, response: &OtlpExportResponse) -> Vec<u8> {
        match self {
            WireFormat::Protobuf => response.encode_to_vec(),
            WireFormat::Json => json::encode_export_response(response),
        }
    }

    fn encode_error(self, answer: &ErrorAnswer) -> Vec<u8> {
        match self {
            WireFormat::Protobuf => answer.rpc_status().encode_to_vec(),
            WireFormat::Json => answer.rpc_status_json(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentEncoding {
    Identity,
    Gzip,
    Zstd,
    Deflate,
}

impl ContentEncoding {
    fn from_headers(headers: &HeaderMap) -> Result<ContentEncoding, ExportError> {
        let Some(value) = headers.get(CONTENT_ENCODING) else {
            return Ok(ContentEncoding::Identity);
        };
        let raw = String::from_utf8_lossy(value.as_bytes());
        let coding = raw.trim();
        if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
            Ok(ContentEncoding::Identity)
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Ok(ContentEncoding::Gzip)
        } else if coding.eq_ignore_ascii_case("zstd") {
            Ok(ContentEncoding::Zstd)
        } else if coding.eq_ignore_ascii_case("deflate") {
            Ok(ContentEncoding::Deflate)
        } else {
            Err(ExportError::UnsupportedContentEncoding {
                found: raw.into_owned(),
            })
        }
    }

    fn name(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Zstd => "zstd",
            ContentEncoding::Deflate => "deflate",
        }
    }
}

struct HttpState {
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
}

/// The OTLP/HTTP routes (`POST /v1/traces`), for mounting into another router or serving
/// with [`serve_http`]. Bodies are limited to `max_request_body_bytes` both as sent and after
/// decompression.
pub fn http_router(consumer: Arc<dyn TraceConsumer>, max_request_body_bytes: usize) -> Router {
    let state = Arc::new(HttpState {
        consumer,
        max_request_body_bytes,
    });
    Router::new()
        .route(TRACES_PATH, post(export_traces))
        // The handler enforces its own limit on the compressed and decompressed sizes;
        // axum's 2 MB default would be a second, unconfigured limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves OTLP/HTTP on an already-bound listener (plain or TLS) until `shutdown` is
/// cancelled, then stops accepting and lets in-flight requests finish before returning.
/// With `auth`, every request needs one of its credentials.
///
/// # Errors
/// The server fails.
pub async fn serve_http(
    listener: Incoming,
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
    auth: Option<AuthLayer>,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    serve_router(
        listener,
        protect(http_router(consumer, max_request_body_bytes), auth),
        "otlp http",
        shutdown,
    )
    .await
}

/// Serves `router` on an already-bound listener until `shutdown` is cancelled, then stops
/// accepting and lets in-flight requests finish; `name` labels the start and stop logs.
/// Every HTTP receiver (OTLP, Zipkin, Jaeger) is served through here.
///
/// # Errors
/// The server fails.
pub(crate) async fn serve_router(
    listener: Incoming,
    router: Router,
    name: &'static str,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    let local_addr = listener.local_addr();
    let tls = listener.is_tls();
    info!(addr = %local_addr, tls, "{name} receiver listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ReceiverError::Http)?;
    info!(addr = %local_addr, "{name} receiver stopped");
    Ok(())
}

async fn export_traces(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = match WireFormat::from_headers(&headers) {
        Ok(format) => format,
        Err(error) => {
            log_refusal(Transport::Http, None, None, &error);
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
                error.to_string(),
            )
                .into_response();
        }
    };
    let tenant = match tenant_from_header(headers.get(TENANT_HEADER).map(HeaderValue::as_bytes)) {
        Ok(tenant) => tenant,
        Err(error) => {
            log_refusal(Transport::Http, None, None, &error);
            return error_response(format, &error);
        }
    };
    match export_traces_inner(&state, format, &headers, body, tenant.clone()).await {
        Ok(response) => (
            StatusCode::OK,
            [(CONTENT_TYPE, format.content_type())],
            format.encode_response(&response),
        )
            .into_response(),
        Err(error) => {
            // Consumer refusals were logged by `export`, with the span count.
            if !matches!(error, ExportError::Consume(_)) {
                log_refusal(Transport::Http, Some(&tenant), None, &error);
            }
            error_response(format, &error)
        }
    }
}

async fn export_traces_inner(
    state: &HttpState,
    format: WireFormat,
    headers: &HeaderMap,
    body: Body,
    tenant: TenantId,
) -> Result<OtlpExportResponse, ExportError> {
    let (request, num_bytes) =
        read_and_decode(headers, body, state.max_request_body_bytes, move |bytes| {
            format.decode(bytes)
        })
        .await?;
    Ok(export(
        state.consumer.as_ref(),
        Transport::Http,
        tenant,
        request,
        num_bytes,
    )
    .await?)
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ExportError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ExportError::BodyTooLarge { limit })
        }
        Err(error) => Err(ExportError::ReadBody(error.to_string())),
    }
}

/// Decompresses (capped at `limit`) and decodes; returns the request and its decoded size.
/// Reads and decodes an upload's body, for every HTTP receiver: `Content-Encoding`, the
/// declared length (413), the body capped at `limit` (413), decompression capped at the
/// same limit, then `decode`. Anything but small bodies is decompressed and decoded on the
/// blocking pool so the async workers keep serving other connections. Returns the decoded
/// value and the decompressed size.
pub(crate) async fn read_and_decode<T, F>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    decode: F,
) -> Result<(T, usize), ExportError>
where
    T: Send + 'static,
    F: FnOnce(&[u8]) -> Result<T, ExportError> + Send + 'static,
{
    let encoding = ContentEncoding::from_headers(headers)?;
    if declared_length(headers).is_some_and(|length| length > limit) {
        return Err(ExportError::BodyTooLarge { limit });
    }
    let raw_body = read_body(body, limit).await?;
    let estimated_work = match encoding {
        ContentEncoding::Identity => raw_body.len(),
        _ => raw_body.len().saturating_mul(ASSUMED_COMPRESSION_RATIO),
    };
    let work = move || -> Result<(T, usize), ExportError> {
        let decompressed = decompress_capped(encoding, raw_body, limit)?;
        Ok((decode(&decompressed)?, decompressed.len()))
    };
    if estimated_work <= INLINE_DECODE_MAX_BYTES {
        work()
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|join_error| ExportError::DecodeTask(join_error.to_string()))?
    }
}

/// Decompresses into at most `limit` bytes. Reading stops one byte past the limit, so the
/// memory a hostile body can claim is bounded by the limit, not by its compression ratio.
fn decompress_capped(
    encoding: ContentEncoding,
    raw_body: Bytes,
    limit: usize,
) -> Result<Bytes, ExportError> {
    let decompress_error = |source| ExportError::Decompress {
        encoding: encoding.name(),
        source,
    };
    let decoder: Box<dyn Read + '_> = match encoding {
        ContentEncoding::Identity => return Ok(raw_body),
        // Multi-member gzip is legal and some clients concatenate members.
        ContentEncoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&raw_body[..])),
        // HTTP `deflate` is the zlib format (RFC 9110 §8.4.1.2).
        ContentEncoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(&raw_body[..])),
        ContentEncoding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(&raw_body[..])
                .map_err(decompress_error)?;
            // The frame header chooses the window size; without a cap, a few bytes can make
            // the decoder allocate 128 MiB. A window larger than the whole allowed output is
            // never needed.
            decoder
                .window_log_max(zstd_window_log_max(limit))
                .map_err(decompress_error)?;
            Box::new(decoder)
        }
    };
    let mut decompressed = Vec::with_capacity(
        raw_body
            .len()
            .saturating_mul(ASSUMED_COMPRESSION_RATIO)
            .min(limit),
    );
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut decompressed)
        .map_err(decompress_error)?;
    if decompressed.len() > limit {
        return Err(ExportError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(decompressed))
}

fn zstd_window_log_max(limit: usize) -> u32 {
    let bits_for_limit = usize::BITS - limit.saturating_sub(1).leading_zeros();
    bits_for_limit.clamp(MIN_ZSTD_WINDOW_LOG, MAX_ZSTD_WINDOW_LOG)
}

fn error_response(format: WireFormat, error: &ExportError) -> Response {
    let answer = ErrorAnswer::from_error(error);
    let (status, retry_after) = refusal_status(error);
    let mut response = (
        status,
        [(CONTENT_TYPE, format.content_type())],
        format.encode_error(&answer),
    )
        .into_response();
    if let Some(retry_after) = retry_after {
        response.headers_mut().insert(RETRY_AFTER, retry_after);
    }
    response
}

/// The HTTP status and `Retry-After` value for a refusal. Shared by every HTTP receiver
/// (OTLP, Zipkin and Jaeger), so backpressure reads the same to all clients.
fn refusal_status(error: &ExportError) -> (StatusCode, Option<HeaderValue>) {
    let code = error.error_code();
    let status = match error {
        // RFC 9110 §15.5.16: 415 covers unsupported content codings too.
        ExportError::UnsupportedContentType { .. }
        | ExportError::UnsupportedZipkinContentType { .. }
        | ExportError::UnsupportedJaegerContentType { .. }
        | ExportError::UnsupportedContentEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => code.http(),
    };
    let retry_after = code
        .retry_after()
        .map(|delay| HeaderValue::from(retry_after_header_secs(delay)));
    (status, retry_after)
}

/// A refusal in `text/plain`, the body Zipkin and Jaeger clients log, with the shared
/// status mapping. Consumer refusals were already logged by `export`, with the span count.
pub(crate) fn plain_text_refusal(transport: Transport, error: &ExportError) -> Response {
    if !matches!(error, ExportError::Consume(_)) {
        log_refusal(transport, None, None, error);
    }
    let (status, retry_after) = refusal_status(error);
    let mut response = (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        error.to_string(),
    )
        .into_response();
    if let Some(retry_after) = retry_after {
        response.headers_mut().insert(RETRY_AFTER, retry_after);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    #[test]
    fn content_type_ignores_case_and_parameters() {
        let parse = |value: &str| WireFormat::from_headers(&headers(&[("content-type", value)]));
        assert_eq!(
            parse("application/x-protobuf").ok(),
            Some(WireFormat::Protobuf)
        );
        assert_eq!(
            parse("Application/JSON; charset=utf-8").ok(),
            Some(WireFormat::Json)
        );
        assert!(parse("text/plain").is_err());
        assert!(WireFormat::from_headers(&HeaderMap::new()).is_err());
    }

    #[test]
    fn content_encodings() {
        let parse = |value: &str| {
            ContentEncoding::from_headers(&headers(&[("content-encoding", value)])).ok()
        };
        assert_eq!(parse("gzip"), Some(ContentEncoding::Gzip));
        assert_eq!(parse("ZSTD"), Some(ContentEncoding::Zstd));
        assert_eq!(parse("identity"), Some(ContentEncoding::Identity));
        assert_eq!(parse("br"), None);
        assert_eq!(parse("gzip, zstd"), None);
        assert_eq!(
            ContentEncoding::from_headers(&HeaderMap::new()).ok(),
            Some(ContentEncoding::Identity)
        );
    }

    #[test]
    fn zstd_window_follows_the_limit_within_bounds() {
        assert_eq!(zstd_window_log_max(1024), MIN_ZSTD_WINDOW_LOG);
        assert_eq!(zstd_window_log_max(16 << 20), 24);
        assert_eq!(zstd_window_log_max((16 << 20) + 1), 25);
        assert_eq!(zstd_window_log_max(usize::MAX), MAX_ZSTD_WINDOW_LOG);
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let payload = vec![0u8; 10_000];
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&payload).expect("compress");
        let gzipped = Bytes::from(gzip.finish().expect("compress"));

        let exact = decompress_capped(ContentEncoding::Gzip, gzipped.clone(), 10_000)
            .expect("fits exactly");
        assert_eq!(exact.len(), 10_000);
        let too_large = decompress_capped(ContentEncoding::Gzip, gzipped, 9_999);
        assert!(matches!(
            too_large,
            Err(ExportError::BodyTooLarge { limit: 9_999 })
        ));

        let zstded = Bytes::from(zstd::encode_all(&payload[..], 3).expect("compress"));
        let too_large = decompress_capped(ContentEncoding::Zstd, zstded, 100);
        assert!(matches!(
            too_large,
            Err(ExportError::BodyTooLarge { limit: 100 })
        ));

        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(b"hello").expect("compress");
        let zlibbed = Bytes::from(zlib.finish().expect("compress"));
        let inflated = decompress_capped(ContentEncoding::Deflate, zlibbed, 100).expect("inflates");
        assert_eq!(&inflated[..], b"hello");
    }

    #[test]
    fn corrupt_compressed_body_is_a_client_error() {
        let error = decompress_capped(ContentEncoding::Gzip, Bytes::from_static(b"nope"), 100)
            .expect_err("not gzip");
        assert!(error
            .to_string()
            .starts_with("failed to decompress gzip request body"));
        assert_eq!(error.error_code().http(), StatusCode::BAD_REQUEST);
    }
}
