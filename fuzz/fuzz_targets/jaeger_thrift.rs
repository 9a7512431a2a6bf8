//! Feeds arbitrary bytes to the Jaeger Thrift decoders and the translation to OTLP. The
//! first byte picks the protocol (bit 0: binary or compact) and the framing (bit 1: a bare
//! `Batch` as `thrift_http` receives it, or an `Agent.emitBatch` datagram as the UDP
//! receivers do). Accepted: a Thrift error, or a batch that translates or is refused for
//! a span's field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor::receiver::jaeger::thrift::{decode_agent_message, decode_batch};
use spoor::receiver::jaeger::{batches_to_otlp, JaegerDecodeError, ThriftProtocol};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let protocol = if selector & 1 == 0 {
        ThriftProtocol::Binary
    } else {
        ThriftProtocol::Compact
    };
    let decoded = if selector & 2 == 0 {
        decode_batch(body, protocol)
    } else {
        decode_agent_message(body, protocol)
    };
    let Ok(batch) = decoded else {
        return;
    };
    match batches_to_otlp(vec![batch]) {
        Ok(_) | Err(JaegerDecodeError::Span { .. }) => {}
        Err(JaegerDecodeError::Thrift(error)) => {
            panic!("translation of a decoded batch reported a Thrift error: {error}")
        }
    }
});
