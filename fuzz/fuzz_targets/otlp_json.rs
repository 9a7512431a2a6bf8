//! Feeds arbitrary bytes to the OTLP/JSON request decoder of the HTTP receivers
//! (`receiver::json::decode_export_request`), then through the span admission check and
//! the Tempo JSON encoder (`otlp::proto_json`) that answers queries. Accepted: an error of
//! a known kind, or a request that survives both without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor::otlp::count_spans;
use spoor::otlp::proto_json;
use spoor::otlp::validate::retain_valid_spans;
use spoor::receiver::json::{decode_export_request, JsonDecodeError};

fuzz_target!(|data: &[u8]| {
    match decode_export_request(data) {
        Ok(mut request) => {
            let before = count_spans(&request.resource_spans);
            let rejected = retain_valid_spans(&mut request.resource_spans);
            assert_eq!(
                before,
                count_spans(&request.resource_spans) + rejected.num_spans as usize
            );
            let _ = proto_json::trace(&request.resource_spans, "batches");
        }
        Err(JsonDecodeError::Syntax(_) | JsonDecodeError::Field { .. }) => {}
    }
});
