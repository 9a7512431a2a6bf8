//! Feeds arbitrary bytes to the path an OTLP protobuf request body takes in the receivers
//! and the server's ingest: decode `ExportTraceServiceRequest`, drop unstorable spans
//! (`retain_valid_spans`), split by trace into the WAL `Batch` record (`batch_record`).
//! Accepted: a decode error, or a request whose surviving spans all have storable IDs and
//! all reach the record, each trace's piece decoding as protobuf `TracesData`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use spoor::otlp::validate::retain_valid_spans;
use spoor::otlp::{count_spans, OtlpExportRequest, OtlpTracesData};
use spoor::server::wal::batch_record;
use spoor::tenant::TenantId;

fuzz_target!(|data: &[u8]| {
    let Ok(mut request) = OtlpExportRequest::decode(data) else {
        return;
    };
    let before = count_spans(&request.resource_spans);
    let rejected = retain_valid_spans(&mut request.resource_spans);
    let kept = count_spans(&request.resource_spans);
    assert_eq!(before, kept + rejected.num_spans as usize);
    assert_eq!(rejected.num_spans > 0, rejected.first_reason.is_some());

    let tenant = TenantId::new("fuzz").expect("a valid tenant name");
    let (_framed, pieces) = batch_record(&tenant, &request.resource_spans);
    let mut in_pieces = 0;
    for (trace_id, piece) in &pieces {
        let traces = OtlpTracesData::decode(piece.clone()).expect("a piece is TracesData");
        for span in traces
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            assert_eq!(span.trace_id, trace_id.0);
            in_pieces += 1;
        }
    }
    assert_eq!(in_pieces, kept);
});
