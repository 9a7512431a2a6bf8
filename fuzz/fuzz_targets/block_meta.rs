//! Feeds arbitrary bytes to the block `meta.json` reader (`BlockMeta::from_json`, what
//! the blocklist poller reads from storage). Accepted: an error of a known kind, or a meta
//! that writes back to JSON and reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor::server::block::{BlockMeta, MetaError};

fuzz_target!(|data: &[u8]| {
    match BlockMeta::from_json(data) {
        Ok(meta) => {
            let json = meta.to_json().expect("a parsed meta serialises");
            let again = BlockMeta::from_json(&json).expect("written meta reads back");
            assert_eq!(again, meta);
        }
        Err(
            MetaError::Json(_)
            | MetaError::UnsupportedFormat(_)
            | MetaError::Tenant(_)
            | MetaError::TraceId { .. },
        ) => {}
    }
});
