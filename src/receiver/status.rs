//! Error answers shared by both transports.
//!
//! A refusal is described once, as an [`ErrorCode`] plus a message, and rendered three ways:
//! a gRPC `Status` whose `grpc-status-details-bin` carries a `google.rpc.Status` (with a
//! `google.rpc.RetryInfo` detail when the client should retry), and the OTLP/HTTP error body,
//! which is the same `google.rpc.Status` encoded as protobuf or as proto3 JSON. OTLP exporters
//! only retry `RESOURCE_EXHAUSTED` when `RetryInfo` is present, so leaving it out would turn
//! backpressure into data loss.
//!
//! The three `google.rpc` messages are declared here with prost rather than taken from a crate:
//! they are tiny, stable, and the tests decode them with `tonic-types` as an independent check.

use std::time::Duration;

use prost::Message;

use crate::error::{ErrorCode, ServiceError};

const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoAny {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

impl From<Duration> for ProtoDuration {
    fn from(duration: Duration) -> Self {
        ProtoDuration {
            seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            // Always below 1e9, so it fits.
            nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
        }
    }
}

/// A refusal, independent of the transport that reports it.
#[derive(Debug, Clone)]
pub(crate) struct ErrorAnswer {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl ErrorAnswer {
    pub(crate) fn from_error(error: &(impl ServiceError + ?Sized)) -> ErrorAnswer {
        ErrorAnswer {
            code: error.error_code(),
            message: error.to_string(),
        }
    }

    pub(crate) fn rpc_status(&self) -> RpcStatus {
        let details = self
            .code
            .retry_after()
            .map(|retry_after| ProtoAny {
                type_url: RETRY_INFO_TYPE_URL.to_string(),
                value: RetryInfo {
                    retry_delay: Some(retry_after.into()),
                }
                .encode_to_vec(),
            })
            .into_iter()
            .collect();
        RpcStatus {
            code: self.code.grpc() as i32,
            message: self.message.clone(),
            details,
        }
    }

    /// The gRPC status; details are only attached when there is something to say, so plain
    /// errors stay plain for clients that never look at details.
    pub(crate) fn grpc_status(&self) -> tonic::Status {
        if self.code.retry_after().is_none() {
            return tonic::Status::new(self.code.grpc(), self.message.clone());
        }
        let details = self.rpc_status().encode_to_vec();
        tonic::Status::with_details(self.code.grpc(), self.message.clone(), details.into())
    }

    /// `google.rpc.Status` in the proto3 JSON mapping, as OTLP/HTTP wants for JSON requests.
    pub(crate) fn rpc_status_json(&self) -> Vec<u8> {
        let mut status = serde_json::json!({
            "code": self.code.grpc() as i32,
            "message": self.message,
        });
        if let Some(retry_after) = self.code.retry_after() {
            status["details"] = serde_json::json!([{
                "@type": RETRY_INFO_TYPE_URL,
                "retryDelay": proto_json_duration(retry_after),
            }]);
        }
        status.to_string().into_bytes()
    }
}

/// The `Retry-After` header value: whole seconds, rounded up so clients never come back early,
/// and at least 1 because `Retry-After: 0` invites a tight retry loop.
pub(crate) fn retry_after_header_secs(retry_after: Duration) -> u64 {
    let rounded_up = retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
    rounded_up.max(1)
}

/// A `google.protobuf.Duration` in proto3 JSON: seconds with 0, 3, 6 or 9 fractional digits
/// and an `s` suffix.
fn proto_json_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        format!("{seconds}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{seconds}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{seconds}.{:06}s", nanos / 1_000)
    } else {
        format!("{seconds}.{nanos:09}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn full(retry_after: Duration) -> ErrorAnswer {
        ErrorAnswer {
            code: ErrorCode::ResourceExhausted { retry_after },
            message: "ingest queue is full, retry later".to_string(),
        }
    }

    #[test]
    fn retry_after_header_rounds_up_with_a_floor_of_one() {
        assert_eq!(retry_after_header_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_header_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_header_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_header_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_header_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_header_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn json_durations_use_proto3_precision_steps() {
        assert_eq!(proto_json_duration(Duration::from_secs(3)), "3s");
        assert_eq!(proto_json_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(
            proto_json_duration(Duration::from_micros(1_000_001)),
            "1.000001s"
        );
        assert_eq!(proto_json_duration(Duration::from_nanos(7)), "0.000000007s");
    }

    #[test]
    fn grpc_status_carries_retry_info_readable_by_tonic_types() {
        let status = full(Duration::from_millis(2500)).grpc_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry_info = status
            .get_details_retry_info()
            .expect("RetryInfo detail present");
        assert_eq!(retry_info.retry_delay, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn grpc_status_without_retry_has_no_details() {
        let answer = ErrorAnswer {
            code: ErrorCode::Unavailable,
            message: "shutting down".to_string(),
        };
        let status = answer.grpc_status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.details().is_empty());
    }

    #[test]
    fn protobuf_body_is_a_google_rpc_status() {
        let encoded = full(Duration::from_secs(4)).rpc_status().encode_to_vec();
        let decoded = tonic_types::pb::Status::decode(encoded.as_slice()).expect("decodes");
        assert_eq!(decoded.code, tonic::Code::ResourceExhausted as i32);
        assert_eq!(decoded.message, "ingest queue is full, retry later");
        assert_eq!(decoded.details.len(), 1);
        assert_eq!(decoded.details[0].type_url, RETRY_INFO_TYPE_URL);
    }

    #[test]
    fn json_body_is_a_google_rpc_status() {
        let body = full(Duration::from_millis(1500)).rpc_status_json();
        let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "code": 8,
                "message": "ingest queue is full, retry later",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": "1.500s",
                }],
            })
        );
        let plain = ErrorAnswer {
            code: ErrorCode::InvalidArgument,
            message: "bad".to_string(),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&plain.rpc_status_json()).expect("valid JSON");
        assert_eq!(value, serde_json::json!({"code": 3, "message": "bad"}));
    }
}
