//! Checksummed, self-delimiting records for append-only segment files: the on-disk
//! framing shared by the server's WAL and the collector's persistent queue.
//!
//! ```text
//! segment := magic[8] version:u32le record*
//! record  := len:u32le len_crc:u32le body_crc:u32le body[len]
//! ```
//! `len_crc` protects the length on its own, so a reader can tell a damaged length from
//! a damaged body: with a good length a bad record is skipped precisely; with a bad
//! length the reader scans forward for the next offset where both checksums hold.

/// Bytes of a segment header: magic + format version.
pub(crate) const SEGMENT_HEADER_LEN: usize = 12;
/// Bytes before a record's body.
pub(crate) const RECORD_HEADER_LEN: usize = 12;
/// No legitimate record is larger; a length beyond this is damage, not data.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;

pub(crate) fn segment_header(magic: &[u8; 8], version: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..8].copy_from_slice(magic);
    header[8..].copy_from_slice(&version.to_le_bytes());
    header
}

/// Appends one framed record to `out`.
pub(crate) fn frame_record(body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// Fills the header of `framed`, whose body follows [`RECORD_HEADER_LEN`] reserved
/// bytes: the same bytes [`frame_record`] produces, without copying the body.
pub(crate) fn fill_frame_header(framed: &mut [u8]) {
    let (header, body) = framed.split_at_mut(RECORD_HEADER_LEN);
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
    header[0..4].copy_from_slice(&len);
    header[4..8].copy_from_slice(&crc32fast::hash(&len).to_le_bytes());
    header[8..12].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
}

/// The body of the record at `offset`, if both of its checksums hold.
pub(crate) fn record_at(data: &[u8], offset: usize) -> Option<&[u8]> {
    let header = data.get(offset..offset.checked_add(RECORD_HEADER_LEN)?)?;
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
    let body = data.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(body) == body_crc).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_framing_matches_frame_record() {
        let body = b"some record body";
        let mut expected = Vec::new();
        frame_record(body, &mut expected);
        let mut framed = vec![0u8; RECORD_HEADER_LEN];
        framed.extend_from_slice(body);
        fill_frame_header(&mut framed);
        assert_eq!(framed, expected);
        assert_eq!(record_at(&framed, 0), Some(&body[..]));
        framed[RECORD_HEADER_LEN] ^= 1;
        assert_eq!(
            record_at(&framed, 0),
            None,
            "a flipped body bit fails the checksum"
        );
    }
}
