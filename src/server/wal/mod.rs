//! The write-ahead log: what makes an acknowledgement mean "durable".
//!
//! The WAL directory holds numbered segment files (`00000000000000000042.wal`), an
//! `instance-id` (a UUID that makes this server's block IDs unique and deterministic) and
//! a `flushed-through` marker: every segment at or below it is fully represented by
//! durable blocks and may be deleted. Records are written by a single thread (see
//! `server::ingest`) and read back only at start-up, by replay.
//!
//! Record kinds:
//! - `Batch`: the spans of one acknowledged request, already split per trace.
//! - `Carry`: spans of still-live traces copied forward from older segments when a block
//!   is cut, so those segments can be deleted while the traces stay in memory.
//! - `Cut`: "segments ≤ N are being turned into blocks". Written (after the carries)
//!   before any block upload, so a crash mid-cut is redone identically at replay.

mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use uuid::Uuid;

use crate::otlp::TraceId;
use crate::tenant::{TenantError, TenantId};

use record::{fill_frame_header, frame_record, segment_header, FRAME_HEADER_LEN};
pub use record::{read_segment, Damage, SegmentContents, SegmentFormatError};

const SEGMENT_SUFFIX: &str = ".wal";
const FLUSHED_MARKER: &str = "flushed-through";
const INSTANCE_ID_FILE: &str = "instance-id";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal i/o on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("wal segment {path}: {source}")]
    Segment {
        path: PathBuf,
        source: SegmentFormatError,
    },
    #[error("wal file {path} is not valid: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("wal record: {0}")]
    Record(#[from] RecordDecodeError),
    #[error("wal writer is shut down")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The per-trace pieces of one tenant's request: `(trace ID, encoded ResourceSpans list)`.
/// Each piece is a protobuf `TracesData` holding only that trace's spans.
pub type TracePiece = (TraceId, Bytes);

#[derive(Debug, Clone, PartialEq)]
pub enum WalRecord {
    Batch {
        tenant: TenantId,
        pieces: Vec<TracePiece>,
    },
    Carry {
        through_segment: u64,
        tenant: TenantId,
        pieces: Vec<TracePiece>,
    },
    Cut {
        through_segment: u64,
    },
}

const KIND_BATCH: u8 = 1;
const KIND_CARRY: u8 = 2;
const KIND_CUT: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("record is truncated")]
    Truncated,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("record names an invalid tenant: {0}")]
    Tenant(#[from] TenantError),
}

impl WalRecord {
    /// Appends the record body (kind + payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            WalRecord::Batch { tenant, pieces } => {
                out.push(KIND_BATCH);
                encode_pieces(tenant, pieces, out);
            }
            WalRecord::Carry {
                through_segment,
                tenant,
                pieces,
            } => {
                out.push(KIND_CARRY);
                out.extend_from_slice(&through_segment.to_le_bytes());
                encode_pieces(tenant, pieces, out);
            }
            WalRecord::Cut { through_segment } => {
                out.push(KIND_CUT);
                out.extend_from_slice(&through_segment.to_le_bytes());
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<WalRecord, RecordDecodeError> {
        let mut reader = Reader(body);
        match reader.u8()? {
            KIND_BATCH => {
                let (tenant, pieces) = decode_pieces(&mut reader)?;
                Ok(WalRecord::Batch { tenant, pieces })
            }
            KIND_CARRY => {
                let through_segment = reader.u64()?;
                let (tenant, pieces) = decode_pieces(&mut reader)?;
                Ok(WalRecord::Carry {
                    through_segment,
                    tenant,
                    pieces,
                })
            }
            KIND_CUT => Ok(WalRecord::Cut {
                through_segment: reader.u64()?,
            }),
            other => Err(RecordDecodeError::UnknownKind(other)),
        }
    }
}

fn encode_pieces(tenant: &TenantId, pieces: &[TracePiece], out: &mut Vec<u8>) {
    let name = tenant.as_str().as_bytes();
    // Tenant names are at most 150 bytes (validated by TenantId).
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
    for (trace_id, data) in pieces {
        out.extend_from_slice(&trace_id.0);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
}

fn decode_pieces(
    reader: &mut Reader<'_>,
) -> Result<(TenantId, Vec<TracePiece>), RecordDecodeError> {
    let name_len = reader.u8()? as usize;
    let name = std::str::from_utf8(reader.take(name_len)?)
        .map_err(|_| TenantError::BadCharacter(char::REPLACEMENT_CHARACTER))?;
    let tenant = TenantId::new(name)?;
    let count = reader.u32()? as usize;
    let mut pieces = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(reader.take(16)?);
        let len = reader.u32()? as usize;
        pieces.push((TraceId(trace_id), Bytes::copy_from_slice(reader.take(len)?)));
    }
    Ok((tenant, pieces))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordDecodeError> {
        if self.0.len() < n {
            return Err(RecordDecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordDecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

/// Builds the framed `Batch` record of one tenant's request, encoding each trace's
/// piece straight into the record buffer. The returned pieces are slices of that same
/// buffer, so the head shares the bytes the WAL wrote: no copy, one allocation.
pub fn batch_record(
    tenant: &TenantId,
    resource_spans: &[crate::otlp::OtlpResourceSpans],
) -> (Bytes, Vec<TracePiece>) {
    let name = tenant.as_str().as_bytes();
    let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + 2 + name.len() + 4);
    buf.resize(FRAME_HEADER_LEN, 0);
    buf.push(KIND_BATCH);
    buf.push(name.len() as u8);
    buf.extend_from_slice(name);
    let count_at = buf.len();
    buf.extend_from_slice(&0u32.to_le_bytes());
    // The same layout as `encode_pieces`: trace ID, length, piece, for each trace.
    let ranges =
        crate::otlp::batch::encode_by_trace(resource_spans, &mut buf, 20, |trace_id, len, buf| {
            buf.extend_from_slice(&trace_id.0);
            buf.extend_from_slice(&(len as u32).to_le_bytes());
        });
    buf[count_at..count_at + 4].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
    fill_frame_header(&mut buf);
    debug_assert_eq!(buf.len(), buf.capacity(), "record buffer sized exactly");
    let framed = Bytes::from(buf);
    let pieces = ranges
        .into_iter()
        .map(|(trace_id, range)| (trace_id, framed.slice(range)))
        .collect();
    (framed, pieces)
}

/// Frames an encoded record body for appending to a segment.
pub fn frame(record: &WalRecord) -> Vec<u8> {
    let mut body = Vec::new();
    record.encode(&mut body);
    let mut framed = Vec::with_capacity(body.len() + 12);
    frame_record(&body, &mut framed);
    framed
}

/// The WAL directory and its bookkeeping files.
#[derive(Debug, Clone)]
pub struct WalDir {
    dir: PathBuf,
}

/// One segment as read back at replay.
#[derive(Debug)]
pub struct ReplayedSegment {
    pub id: u64,
    pub records: Vec<WalRecord>,
    pub damage: Vec<Damage>,
    /// Records whose frame was intact but whose content could not be decoded.
    pub undecodable: usize,
}

impl WalDir {
    pub fn open(dir: &Path) -> Result<WalDir, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(WalDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
    }

    /// This server's stable identity, created on first start.
    pub fn instance_id(&self) -> Result<Uuid, WalError> {
        let path = self.dir.join(INSTANCE_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Uuid::parse_str(text.trim()).map_err(|e| WalError::BadFile {
                path: path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Uuid::new_v4();
                self.write_atomically(INSTANCE_ID_FILE, id.to_string().as_bytes())?;
                Ok(id)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The highest segment whose contents are all in durable blocks.
    pub fn flushed_through(&self) -> Result<Option<u64>, WalError> {
        let path = self.dir.join(FLUSHED_MARKER);
        match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: std::num::ParseIntError| WalError::BadFile {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn set_flushed_through(&self, segment: u64) -> Result<(), WalError> {
        self.write_atomically(FLUSHED_MARKER, segment.to_string().as_bytes())
    }

    /// Write to a temporary file, fsync, rename over the target, fsync the directory:
    /// the file is either the old or the new content after a crash, never partial.
    fn write_atomically(&self, name: &str, content: &[u8]) -> Result<(), WalError> {
        let target = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(content).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &target).map_err(io_err(&target))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), WalError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }

    /// Segment IDs present on disk, ascending.
    pub fn segments(&self) -> Result<Vec<u64>, WalError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
                continue;
            };
            if let Ok(id) = stem.parse::<u64>() {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Deletes every segment with an ID ≤ `through`.
    pub fn delete_through(&self, through: u64) -> Result<usize, WalError> {
        let mut deleted = 0;
        for id in self.segments()?.into_iter().filter(|id| *id <= through) {
            let path = self.segment_path(id);
            fs::remove_file(&path).map_err(io_err(&path))?;
            deleted += 1;
        }
        if deleted > 0 {
            self.sync_dir()?;
        }
        Ok(deleted)
    }

    /// Deletes one segment (replay uses it for segments that hold no records).
    pub fn delete_segment(&self, id: u64) -> Result<(), WalError> {
        let path = self.segment_path(id);
        fs::remove_file(&path).map_err(io_err(&path))?;
        self.sync_dir()
    }

    pub fn create_segment(&self, id: u64) -> Result<SegmentWriter, WalError> {
        let path = self.segment_path(id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(&segment_header()).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        self.sync_dir()?;
        Ok(SegmentWriter {
            id,
            path,
            file,
            len: record::HEADER_LEN as u64,
        })
    }

    /// Reads a segment, recovering every intact record. A torn tail is truncated away on
    /// disk so it is reported once, not at every start.
    pub fn replay_segment(&self, id: u64) -> Result<ReplayedSegment, WalError> {
        let path = self.segment_path(id);
        let data = fs::read(&path).map_err(io_err(&path))?;
        let contents = read_segment(&data).map_err(|source| WalError::Segment {
            path: path.clone(),
            source,
        })?;
        let mut records = Vec::with_capacity(contents.records.len());
        let mut undecodable = 0;
        for body in &contents.records {
            match WalRecord::decode(body) {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::error!(segment = id, %error, "wal record has a valid checksum but cannot be decoded");
                    undecodable += 1;
                }
            }
        }
        if contents.good_len < data.len()
            && matches!(contents.damage.last(), Some(Damage::TornTail { .. }))
        {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            file.set_len(contents.good_len as u64)
                .map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        Ok(ReplayedSegment {
            id,
            records,
            damage: contents.damage,
            undecodable,
        })
    }
}

/// The open segment. Only the WAL writer thread owns one.
#[derive(Debug)]
pub struct SegmentWriter {
    id: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

impl SegmentWriter {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= record::HEADER_LEN as u64
    }

    /// Writes framed records straight to the file (no user-space buffer, so a process
    /// crash after this returns loses nothing; power loss needs [`SegmentWriter::sync`]).
    pub fn append(&mut self, framed: &[u8]) -> Result<(), WalError> {
        self.file.write_all(framed).map_err(io_err(&self.path))?;
        self.len += framed.len() as u64;
        Ok(())
    }

    pub fn sync(&self) -> Result<(), WalError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(n: u8) -> TracePiece {
        (TraceId([n; 16]), Bytes::from(vec![n; n as usize]))
    }

    #[test]
    fn records_round_trip() {
        let tenant = TenantId::new("acme").unwrap();
        for record in [
            WalRecord::Batch {
                tenant: tenant.clone(),
                pieces: vec![piece(1), piece(0), piece(7)],
            },
            WalRecord::Carry {
                through_segment: 42,
                tenant,
                pieces: vec![piece(3)],
            },
            WalRecord::Cut { through_segment: 9 },
        ] {
            let mut body = Vec::new();
            record.encode(&mut body);
            assert_eq!(WalRecord::decode(&body).unwrap(), record);
            for cut in 0..body.len() {
                assert!(WalRecord::decode(&body[..cut]).is_err());
            }
        }
    }

    #[test]
    fn batch_record_is_a_decodable_batch_sharing_its_buffer() {
        let tenant = TenantId::new("acme").unwrap();
        let trace = crate::testing::make_trace_for_test(3, 5);
        let (framed, pieces) = batch_record(&tenant, &trace.batches);
        let contents = record::read_segment(&[&segment_header()[..], &framed[..]].concat())
            .unwrap()
            .records
            .into_iter()
            .map(|body| WalRecord::decode(body).unwrap())
            .collect::<Vec<_>>();
        assert_eq!(
            contents,
            vec![WalRecord::Batch {
                tenant,
                pieces: pieces.clone()
            }]
        );
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].0, trace.trace_id);
        let decoded =
            <crate::otlp::OtlpTracesData as prost::Message>::decode(pieces[0].1.clone()).unwrap();
        assert_eq!(decoded.resource_spans, trace.batches);
    }

    #[test]
    fn segments_markers_and_replay() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = WalDir::open(tmp.path()).unwrap();
        let id = wal.instance_id().unwrap();
        assert_eq!(wal.instance_id().unwrap(), id, "instance id is stable");
        assert_eq!(wal.flushed_through().unwrap(), None);

        let mut seg = wal.create_segment(3).unwrap();
        let record = WalRecord::Cut { through_segment: 2 };
        seg.append(&frame(&record)).unwrap();
        seg.append(&frame(&record)).unwrap();
        seg.sync().unwrap();
        // A torn write at the end.
        seg.append(&frame(&record)[..5]).unwrap();
        wal.create_segment(4).unwrap();
        assert_eq!(wal.segments().unwrap(), vec![3, 4]);

        let replayed = wal.replay_segment(3).unwrap();
        assert_eq!(replayed.records, vec![record.clone(), record.clone()]);
        assert!(matches!(
            replayed.damage[..],
            [Damage::TornTail { len: 5, .. }]
        ));
        let again = wal.replay_segment(3).unwrap();
        assert!(again.damage.is_empty(), "torn tail was truncated on disk");

        wal.set_flushed_through(3).unwrap();
        assert_eq!(wal.flushed_through().unwrap(), Some(3));
        assert_eq!(wal.delete_through(3).unwrap(), 1);
        assert_eq!(wal.segments().unwrap(), vec![4]);
    }
}
