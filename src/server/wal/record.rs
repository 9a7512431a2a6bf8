//! WAL segment file format.
//!
//! ```text
//! segment := header record*
//! header  := "SPOORWAL" version:u32le
//! record  := len:u32le len_crc:u32le body_crc:u32le body[len]
//! body    := kind:u8 payload
//! ```
//! `len_crc` protects the length on its own so a damaged length is told apart from a
//! damaged body: a bad body with a good length is skipped precisely, while a bad length
//! makes the reader scan forward for the next position where both checksums hold.
//! Everything after the last good record of the last segment is a torn write.

use std::io;

pub(crate) use crate::framing::{
    fill_frame_header, frame_record, RECORD_HEADER_LEN as FRAME_HEADER_LEN,
};
use crate::framing::{record_at, MAX_RECORD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

pub(crate) const MAGIC: &[u8; 8] = b"SPOORWAL";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = SEGMENT_HEADER_LEN;

pub(crate) fn segment_header() -> [u8; HEADER_LEN] {
    crate::framing::segment_header(MAGIC, FORMAT_VERSION)
}

/// Damage found while reading a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// A record whose length is intact but whose body fails its checksum; skipped.
    CorruptRecord { offset: usize, len: usize },
    /// Bytes that could not be parsed as records, followed by a good record.
    Garbage { offset: usize, len: usize },
    /// Bytes at the end with no good record after them (a torn write).
    TornTail { offset: usize, len: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentFormatError {
    #[error("not a spoor WAL segment (bad magic)")]
    BadMagic,
    #[error("unsupported WAL format version {0}")]
    UnsupportedVersion(u32),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Result of reading a whole segment.
#[derive(Debug, Default)]
pub struct SegmentContents<'a> {
    pub records: Vec<&'a [u8]>,
    pub damage: Vec<Damage>,
    /// Offset just past the last good record: where a torn tail starts.
    pub good_len: usize,
}

/// Whether the length header at `offset` is intact and its body lies inside `data`.
fn intact_len_at(data: &[u8], offset: usize) -> Option<usize> {
    let header = data.get(offset..offset + 8)?;
    let len_bytes: [u8; 4] = header[0..4].try_into().ok()?;
    let len_crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let len = u32::from_le_bytes(len_bytes) as usize;
    (crc32fast::hash(&len_bytes) == len_crc
        && len <= MAX_RECORD_LEN
        && offset + RECORD_HEADER_LEN + len <= data.len())
    .then_some(len)
}

/// Parses a whole segment file, recovering every record that is intact. Public so the
/// fuzzer can feed it arbitrary bytes (`fuzz/fuzz_targets/wal_record.rs`).
///
/// # Errors
/// The header is not a spoor WAL segment of a supported version; damage after the header
/// is reported in [`SegmentContents::damage`], never as an error.
pub fn read_segment(data: &[u8]) -> Result<SegmentContents<'_>, SegmentFormatError> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err(SegmentFormatError::BadMagic);
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != FORMAT_VERSION {
        return Err(SegmentFormatError::UnsupportedVersion(version));
    }
    let mut contents = SegmentContents {
        good_len: HEADER_LEN,
        ..Default::default()
    };
    let mut offset = HEADER_LEN;
    while offset < data.len() {
        if let Some(body) = record_at(data, offset) {
            contents.records.push(body);
            offset += RECORD_HEADER_LEN + body.len();
            contents.good_len = offset;
            continue;
        }
        if let Some(len) = intact_len_at(data, offset) {
            // The length holds but the body does not: skip exactly this record, unless
            // nothing good follows, in which case it is the torn tail.
            let next = offset + RECORD_HEADER_LEN + len;
            if next < data.len() && next_good_record(data, next).is_some() {
                contents.damage.push(Damage::CorruptRecord { offset, len });
                offset = next;
                continue;
            }
        }
        match next_good_record(data, offset + 1) {
            Some(next) => {
                contents.damage.push(Damage::Garbage {
                    offset,
                    len: next - offset,
                });
                offset = next;
            }
            None => {
                contents.damage.push(Damage::TornTail {
                    offset,
                    len: data.len() - offset,
                });
                break;
            }
        }
    }
    Ok(contents)
}

fn next_good_record(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len()).find(|&offset| record_at(data, offset).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(bodies: &[&[u8]]) -> Vec<u8> {
        let mut data = segment_header().to_vec();
        for body in bodies {
            frame_record(body, &mut data);
        }
        data
    }

    #[test]
    fn reads_back_records() {
        let data = segment(&[b"one", b"", b"three"]);
        let contents = read_segment(&data).unwrap();
        assert_eq!(contents.records, vec![&b"one"[..], b"", b"three"]);
        assert!(contents.damage.is_empty());
        assert_eq!(contents.good_len, data.len());
    }

    #[test]
    fn torn_tail_is_reported_and_good_records_kept() {
        let mut data = segment(&[b"one", b"two"]);
        let good = data.len();
        let mut torn = Vec::new();
        frame_record(b"three-three-three", &mut torn);
        data.extend_from_slice(&torn[..torn.len() - 4]);
        let contents = read_segment(&data).unwrap();
        assert_eq!(contents.records, vec![&b"one"[..], b"two"]);
        assert_eq!(contents.good_len, good);
        assert_eq!(
            contents.damage,
            vec![Damage::TornTail {
                offset: good,
                len: torn.len() - 4
            }]
        );
    }

    #[test]
    fn corrupt_middle_body_is_skipped() {
        let mut data = segment(&[b"one", b"two", b"three"]);
        let two_body = HEADER_LEN + 12 + 3 + 12;
        data[two_body] ^= 0xff;
        let contents = read_segment(&data).unwrap();
        assert_eq!(contents.records, vec![&b"one"[..], b"three"]);
        assert_eq!(
            contents.damage,
            vec![Damage::CorruptRecord {
                offset: HEADER_LEN + 15,
                len: 3
            }]
        );
    }

    #[test]
    fn corrupt_middle_length_resyncs() {
        let mut data = segment(&[b"one", b"two", b"three"]);
        data[HEADER_LEN + 15] ^= 0x40;
        let contents = read_segment(&data).unwrap();
        assert_eq!(contents.records, vec![&b"one"[..], b"three"]);
        assert!(matches!(contents.damage[..], [Damage::Garbage { .. }]));
    }

    #[test]
    fn rejects_foreign_files() {
        assert!(matches!(
            read_segment(b"not a wal at all"),
            Err(SegmentFormatError::BadMagic)
        ));
        let mut data = segment(&[]);
        data[8] = 9;
        assert!(matches!(
            read_segment(&data),
            Err(SegmentFormatError::UnsupportedVersion(9))
        ));
    }
}
