//! `otlp` exporter: OTLP over gRPC (`TraceService/Export`).
//!
//! Requests go out already encoded (a persistent queue stores them encoded; a memory
//! queue's batches are encoded on the blocking pool when large), through a codec that
//! writes the bytes as they are, so protobuf encoding never runs twice nor on an async
//! worker. Compression is tonic's (gzip or zstd).
//!
//! Failure classes follow the OpenTelemetry Collector's otlp exporter: CANCELLED,
//! DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried;
//! RESOURCE_EXHAUSTED is retried only when the server sent `RetryInfo` (a server
//! that is out of capacity says when to come back; one that refuses a message as too
//! large does not); everything else (INVALID_ARGUMENT, UNAUTHENTICATED, …) is permanent.

use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use super::{ExportError, Exported, Payload};
use crate::config::collector::{Compression, OtlpExporterConfig};
use crate::otlp::OtlpExportResponse;
use crate::tenant::{TenantId, SINGLE_TENANT, TENANT_HEADER};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Responses are tiny; anything near this is not an OTLP response.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// How long a connection attempt may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct OtlpGrpcExporter {
    channel: Channel,
    compression: Option<CompressionEncoding>,
    headers: MetadataMap,
    timeout: Duration,
}

impl OtlpGrpcExporter {
    pub(crate) fn new(config: &OtlpExporterConfig) -> Result<OtlpGrpcExporter, String> {
        let mut endpoint = Endpoint::from_str(&config.endpoint)
            .map_err(|error| format!("invalid endpoint {:?}: {error}", config.endpoint))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(config.timeout)
            .tcp_nodelay(true);
        let skip_verify = match &config.tls {
            Some(tls) if tls.insecure_skip_verify => {
                Some(super::skip_verify::SkipVerifyConnector::new(tls)?)
            }
            _ => None,
        };
        if let Some(connector) = skip_verify {
            // The connector does the TLS; tonic would refuse an https URI without its own.
            let plain_uri = config.endpoint.replacen("https://", "http://", 1);
            endpoint = Endpoint::from_str(&plain_uri)
                .map_err(|error| format!("invalid endpoint {:?}: {error}", config.endpoint))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(config.timeout)
                .tcp_nodelay(true);
            return Self::with_channel(config, endpoint.connect_with_connector_lazy(connector));
        }
        if let Some(tls) = &config.tls {
            let mut tls_config = ClientTlsConfig::new().with_native_roots();
            if let Some(ca_file) = &tls.ca_file {
                let pem = std::fs::read(ca_file)
                    .map_err(|error| format!("tls.ca_file {}: {error}", ca_file.display()))?;
                tls_config = tls_config.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) {
                let cert = std::fs::read(cert_file)
                    .map_err(|error| format!("tls.cert_file {}: {error}", cert_file.display()))?;
                let key = std::fs::read(key_file)
                    .map_err(|error| format!("tls.key_file {}: {error}", key_file.display()))?;
                tls_config = tls_config.identity(Identity::from_pem(cert, key));
            }
            if let Some(server_name) = &tls.server_name {
                tls_config = tls_config.domain_name(server_name.clone());
            }
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|error| format!("tls: {error}"))?;
        }
        // Connects on first use, so a backend that is down at start-up only delays
        // exports (they retry) instead of failing the start.
        Self::with_channel(config, endpoint.connect_lazy())
    }

    fn with_channel(
        config: &OtlpExporterConfig,
        channel: Channel,
    ) -> Result<OtlpGrpcExporter, String> {
        let mut headers = MetadataMap::new();
        for (name, value) in &config.headers {
            let key = AsciiMetadataKey::from_str(&name.to_ascii_lowercase())
                .map_err(|_| format!("headers: {name:?} is not a valid gRPC metadata key"))?;
            let value = AsciiMetadataValue::from_str(value)
                .map_err(|_| format!("headers.{name}: the value is not valid ASCII metadata"))?;
            headers.insert(key, value);
        }
        if let Some(auth) = &config.auth {
            let value = auth
                .header_value()
                .map_err(|_| "auth: the credential is not valid in a header".to_owned())?;
            let mut value = AsciiMetadataValue::try_from(value.as_bytes())
                .map_err(|_| "auth: the credential is not valid ASCII metadata".to_owned())?;
            // Sensitive: `Debug` of the exporter shows no credential.
            value.set_sensitive(true);
            headers.insert("authorization", value);
        }
        Ok(OtlpGrpcExporter {
            channel,
            compression: match config.compression {
                Compression::None => None,
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
            },
            headers,
            timeout: config.timeout,
        })
    }

    pub(crate) async fn export(
        &self,
        tenant: &TenantId,
        payload: &Payload,
        num_spans: usize,
    ) -> Result<Exported, ExportError> {
        let body = payload.encoded(num_spans).await?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.headers.clone();
        // The batch's tenant, unless it is the default one: then a configured
        // X-Scope-OrgID header (or none) applies, as the backend would assume.
        if tenant.as_str() != SINGLE_TENANT {
            if let Ok(value) = AsciiMetadataValue::from_str(tenant.as_str()) {
                request.metadata_mut().insert(TENANT_HEADER, value);
            }
        }
        request.set_timeout(self.timeout);
        let mut client = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        if let Some(encoding) = self.compression {
            client = client.send_compressed(encoding).accept_compressed(encoding);
        }
        let call = async {
            client
                .ready()
                .await
                .map_err(|error| Status::unavailable(format!("connection: {error}")))?;
            client
                .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
                .await
        };
        // tonic's own timeout covers the call; this one also covers connecting.
        let response = match tokio::time::timeout(self.timeout, call).await {
            Ok(response) => response,
            Err(_) => Err(Status::deadline_exceeded("export timed out")),
        };
        match response {
            Ok(response) => {
                let partial = response.into_inner().partial_success.unwrap_or_default();
                Ok(Exported {
                    rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
                    message: partial.error_message,
                })
            }
            Err(status) => Err(classify(&status)),
        }
    }
}

/// Maps a gRPC status to a retry decision, with the server's RetryInfo delay.
pub(crate) fn classify(status: &Status) -> ExportError {
    let retry_delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::retryable(message, retry_delay),
        Code::ResourceExhausted if retry_delay.is_some() => {
            ExportError::retryable(message, retry_delay)
        }
        _ => ExportError::permanent(message),
    }
}

/// Sends pre-encoded request bytes as they are and decodes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = OtlpExportResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

#[derive(Debug)]
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug)]
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = OtlpExportResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        OtlpExportResponse::decode(bytes)
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable export response: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn retry_classes_follow_the_opentelemetry_collector() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::DataLoss,
        ] {
            let error = classify(&Status::new(code, "x"));
            assert!(error.retryable, "{code:?}");
            assert_eq!(error.throttle, None);
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
        ] {
            assert!(!classify(&Status::new(code, "x")).retryable, "{code:?}");
        }
        // RESOURCE_EXHAUSTED without RetryInfo: e.g. a message too large; not retried.
        assert!(!classify(&Status::resource_exhausted("too big")).retryable);
        let throttled = Status::with_error_details(
            Code::ResourceExhausted,
            "queue full",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        let error = classify(&throttled);
        assert!(error.retryable);
        assert_eq!(error.throttle, Some(Duration::from_millis(1500)));
    }
}
