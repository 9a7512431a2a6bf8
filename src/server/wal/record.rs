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

pub(crate) const MAGIC: &[u8; 8] = b"SPOORWAL";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 12;
const RECORD_HEADER_LEN: usize = 12;
/// No legitimate record is larger; a length beyond this is damage, not data.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;

pub(crate) fn segment_header() -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// Appends one framed record to `out`.
pub(crate) fn frame_record(body: &[u8], out: &mut Vec<u8>) {
    let len = (body.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// Space to reserve at the start of a buffer whose record body is built in place.
pub(crate) const FRAME_HEADER_LEN: usize = RECORD_HEADER_LEN;

/// Fills the frame header of `framed`, whose body starts after [`FRAME_HEADER_LEN`]
/// reserved bytes: the same bytes [`frame_record`] produces, without copying the body.
pub(crate) fn fill_frame_header(framed: &mut [u8]) {
    let (header, body) = framed.split_at_mut(RECORD_HEADER_LEN);
    let len = (body.len() as u32).to_le_bytes();
    header[0..4].copy_from_slice(&len);
    header[4..8].copy_from_slice(&crc32fast::hash(&len).to_le_bytes());
    header[8..12].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
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
pub(crate) struct SegmentContents<'a> {
    pub records: Vec<&'a [u8]>,
    pub damage: Vec<Damage>,
    /// Offset just past the last good record: where a torn tail starts.
    pub good_len: usize,
}

/// A record whose two checksums hold at `offset`, returning its body.
fn record_at(data: &[u8], offset: usize) -> Option<&[u8]> {
    let header = data.get(offset..offset + RECORD_HEADER_LEN)?;
    let len_bytes: [u8; 4] = header[0..4].try_into().ok()?;
    let len_crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if crc32fast::hash(&len_bytes) != len_crc {
        return None;
    }
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_RECORD_LEN {
        return None;
    }
    let body_crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let start = offset + RECORD_HEADER_LEN;
    let body = data.get(start..start + len)?;
    (crc32fast::hash(body) == body_crc).then_some(body)
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

/// Parses a whole segment file, recovering every record that is intact.
pub(crate) fn read_segment(data: &[u8]) -> Result<SegmentContents<'_>, SegmentFormatError> {
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
    fn in_place_framing_matches_frame_record() {
        let body = b"some record body";
        let mut expected = Vec::new();
        frame_record(body, &mut expected);
        let mut framed = vec![0u8; FRAME_HEADER_LEN];
        framed.extend_from_slice(body);
        fill_frame_header(&mut framed);
        assert_eq!(framed, expected);
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
