//! The few messages of Tempo's `tempopb` package that the API answers with in protobuf.
//! Field numbers follow `pkg/tempopb/tempo.proto`; `Trace` is wire-identical to OTLP
//! `TracesData`, so the OTLP type stands in for it.

use crate::otlp::OtlpTracesData;

/// `tempopb.TraceByIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    pub trace: Option<OtlpTracesData>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<TraceByIdMetrics>,
    /// `COMPLETE = 0`, `PARTIAL = 1`.
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `tempopb.TraceByIDMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    pub inspected_bytes: u64,
}
