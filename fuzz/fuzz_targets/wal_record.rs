//! Feeds arbitrary bytes to the WAL reader as a whole segment file (`read_segment`, what
//! replay reads from disk) and as one record body (`WalRecord::decode`). Accepted: a typed
//! error, or damage reports that lie inside the input, records that lie inside the input,
//! and decoded records that encode back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor::server::wal::{read_segment, Damage, RecordDecodeError, SegmentFormatError, WalRecord};

fn check_record(body: &[u8]) {
    match WalRecord::decode(body) {
        Ok(record) => {
            let mut encoded = Vec::new();
            record.encode(&mut encoded);
            assert_eq!(WalRecord::decode(&encoded).as_ref(), Ok(&record));
        }
        Err(
            RecordDecodeError::Truncated
            | RecordDecodeError::UnknownKind(_)
            | RecordDecodeError::Tenant(_),
        ) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check_record(data);
    match read_segment(data) {
        Ok(contents) => {
            assert!(contents.good_len <= data.len());
            for damage in &contents.damage {
                let (Damage::CorruptRecord { offset, len }
                | Damage::Garbage { offset, len }
                | Damage::TornTail { offset, len }) = *damage;
                assert!(offset + len <= data.len());
            }
            for record in contents.records {
                check_record(record);
            }
        }
        Err(
            SegmentFormatError::BadMagic
            | SegmentFormatError::UnsupportedVersion(_)
            | SegmentFormatError::Io(_),
        ) => {}
    }
});
