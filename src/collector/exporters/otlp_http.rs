//! `otlphttp` exporter: OTLP over HTTP, protobuf, `POST <endpoint>/v1/traces`.
//!
//! Compression runs on the blocking pool. Failure classes follow the OpenTelemetry
//! Collector's otlphttp exporter: 429, 502, 503 and 504 are retried, honouring
//! `Retry-After` (seconds); every other error status is permanent. Connection errors and
//! timeouts are retried.

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prost::Message as _;
use reqwest_client as reqwest;

use super::{ExportError, Exported, Payload};
use crate::config::collector::{Compression, OtlpHttpExporterConfig};
use crate::otlp::OtlpExportResponse;
use crate::tenant::{TenantId, SINGLE_TENANT, TENANT_HEADER};

const PROTOBUF: &str = "application/x-protobuf";
/// Bodies below this are compressed inline; larger ones on the blocking pool.
const INLINE_COMPRESS_MAX_BYTES: usize = 64 * 1024;
/// Error bodies are read only this far, for the log message.
const MAX_ERROR_BODY_BYTES: usize = 4096;

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Debug)]
pub(crate) struct OtlpHttpExporter {
    client: reqwest::Client,
    url: String,
    compression: Compression,
    headers: HeaderMap,
}

impl OtlpHttpExporter {
    pub(crate) fn new(config: &OtlpHttpExporterConfig) -> Result<OtlpHttpExporter, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca_file) = &config.tls.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|error| format!("tls.ca_file {}: {error}", ca_file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| format!("tls.ca_file {}: {error}", ca_file.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let (Some(cert_file), Some(key_file)) = (&config.tls.cert_file, &config.tls.key_file) {
            let mut pem = std::fs::read(cert_file)
                .map_err(|error| format!("tls.cert_file {}: {error}", cert_file.display()))?;
            pem.extend(
                std::fs::read(key_file)
                    .map_err(|error| format!("tls.key_file {}: {error}", key_file.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|error| format!("tls.cert_file/key_file: {error}"))?;
            builder = builder.identity(identity);
        }
        if config.tls.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|error| format!("http client: {error}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: not a valid header value"))?;
            headers.insert(name, value);
        }
        if let Some(auth) = &config.auth {
            let value = auth
                .header_value()
                .map_err(|_| "auth: the credential is not valid in a header".to_owned())?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(OtlpHttpExporter {
            client,
            url: config.traces_url.clone(),
            compression: config.compression,
            headers,
        })
    }

    pub(crate) async fn export(
        &self,
        tenant: &TenantId,
        payload: &Payload,
        num_spans: usize,
    ) -> Result<Exported, ExportError> {
        let encoded = payload.encoded(num_spans).await?;
        let (body, content_encoding) = compress(self.compression, encoded).await?;
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, PROTOBUF);
        if let Some(content_encoding) = content_encoding {
            request = request.header(CONTENT_ENCODING, content_encoding);
        }
        if tenant.as_str() != SINGLE_TENANT {
            request = request.header(TENANT_HEADER, tenant.as_str());
        }
        let response =
            request.body(body).send().await.map_err(|error| {
                ExportError::retryable(format!("request failed: {error}"), None)
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            // An empty or unparsable success body still means success.
            let partial = OtlpExportResponse::decode(body)
                .ok()
                .and_then(|response| response.partial_success)
                .unwrap_or_default();
            return Ok(Exported {
                rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
                message: partial.error_message,
            });
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = format!("HTTP {}: {}", status.as_u16(), error_message(&body));
        Err(classify(status, retry_after, message))
    }
}

pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> ExportError {
    match status.as_u16() {
        429 | 502 | 503 | 504 => ExportError::retryable(message, retry_after),
        _ => ExportError::permanent(message),
    }
}

/// The message of a `google.rpc.Status` body, else the start of the body as text.
fn error_message(body: &Bytes) -> String {
    if let Ok(status) = RpcStatus::decode(body.clone()) {
        if !status.message.is_empty() {
            return status.message;
        }
    }
    let end = body.len().min(MAX_ERROR_BODY_BYTES);
    String::from_utf8_lossy(&body[..end]).trim().to_owned()
}

async fn compress(
    compression: Compression,
    body: Bytes,
) -> Result<(Bytes, Option<&'static str>), ExportError> {
    let encoding = match compression {
        Compression::None => return Ok((body, None)),
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    };
    let inline = body.len() <= INLINE_COMPRESS_MAX_BYTES;
    let work = move || -> std::io::Result<Bytes> {
        match compression {
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&body)?;
                Ok(Bytes::from(encoder.finish()?))
            }
            Compression::Zstd => Ok(Bytes::from(zstd::bulk::compress(&body, 3)?)),
            Compression::None => Ok(body),
        }
    };
    let compressed = if inline {
        work()
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| ExportError::permanent(format!("compression task failed: {error}")))?
    };
    compressed
        .map(|bytes| (bytes, Some(encoding)))
        .map_err(|error| ExportError::permanent(format!("compression failed: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classes_follow_the_opentelemetry_collector() {
        for code in [429u16, 502, 503, 504] {
            let status = StatusCode::from_u16(code).expect("status");
            assert!(classify(status, None, String::new()).retryable, "{code}");
        }
        for code in [400u16, 401, 403, 404, 413, 500] {
            let status = StatusCode::from_u16(code).expect("status");
            assert!(!classify(status, None, String::new()).retryable, "{code}");
        }
        let throttled = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(7)),
            String::new(),
        );
        assert_eq!(throttled.throttle, Some(Duration::from_secs(7)));
    }

    #[test]
    fn error_bodies_are_read_as_rpc_status_or_text() {
        let status = RpcStatus {
            code: 3,
            message: "bad span".into(),
        };
        assert_eq!(
            error_message(&Bytes::from(status.encode_to_vec())),
            "bad span"
        );
        assert_eq!(
            error_message(&Bytes::from_static(b"plain text\n")),
            "plain text"
        );
    }
}
