//! Feeds arbitrary bytes to the Zipkin v2 JSON decoder (`receiver::zipkin::decode_spans`)
//! with `parse_string_tags` off and on. Accepted: an error of a known kind, or a request,
//! either way without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor::receiver::zipkin::{decode_spans, ZipkinDecodeError, ZipkinOptions};

fuzz_target!(|data: &[u8]| {
    for parse_string_tags in [false, true] {
        match decode_spans(data, ZipkinOptions { parse_string_tags }) {
            Ok(_)
            | Err(
                ZipkinDecodeError::Json(_)
                | ZipkinDecodeError::SpanShape { .. }
                | ZipkinDecodeError::InvalidField { .. },
            ) => {}
        }
    }
});
