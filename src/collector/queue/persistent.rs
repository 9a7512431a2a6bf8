//! The persistent sending queue: batches in append-only segment files, acknowledged to
//! the receiver only once written (and fsynced, by default), removed only after the
//! backend acknowledged them, resent after a restart. At-least-once: a batch sent just
//! before a crash, whose removal was not yet recorded, is sent again.
//!
//! ```text
//! <dir>/<seq:020>.seg
//! segment := "SPOORQUE" version:u32le record*
//! record  := len:u32le len_crc:u32le body_crc:u32le body[len]
//! body    := 1:u8 id:u64le num_spans:u32le tenant_len:u16le tenant request   (a batch)
//!          | 2:u8 id:u64le                                                  (sent: remove)
//! ```
//! The framing is the server WAL's (`src/server/wal/record.rs`): the length has its own
//! checksum so a damaged length is told apart from a damaged body, and the reader scans
//! forward to the next intact record; a torn tail is ignored.
//!
//! One writer thread owns the files (every group of appends ends in a blocking fsync:
//! group commit). Removals are written without fsync: losing one only means a resend.
//! A segment is deleted once it and every older segment hold no pending batch, so a
//! removal record is never deleted before the batch it removes. The queue is bounded in
//! bytes on disk (`max_size`, including removed batches in segments not yet deleted) and,
//! depending on the sizer, in batches or spans; full means the batch is refused and the
//! receiver answers RESOURCE_EXHAUSTED / 429.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{error, info, warn};

use super::{Dispatched, QueueError};
use crate::collector::delivery::{commit_all, fail_all, AckRef};
use crate::collector::exporters::{encode_request_into, encoded_request_len, Payload, QueueItem};
use crate::collector::metrics::{CollectorMetrics, WarnEvery};
use crate::config::collector::{PersistentQueueConfig, QueueSizer};
use crate::framing::{
    frame_record, record_at, MAX_RECORD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::receiver::ConsumeError;
use crate::tenant::TenantId;

const MAGIC: &[u8; 8] = b"SPOORQUE";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = SEGMENT_HEADER_LEN;
const KIND_BATCH: u8 = 1;
const KIND_SENT: u8 = 2;
/// Commands waiting for the writer thread (appends hold batches already counted in the
/// pipeline's in-flight bytes, so this bounds their number, not memory).
const COMMAND_QUEUE_CAPACITY: usize = 256;
/// Appends written before one fsync, at most.
const MAX_GROUP_COMMANDS: usize = 128;
/// Batches kept in memory for sending, on top of being on disk; beyond this, consumers
/// read them back from disk.
const CACHE_MAX_BYTES: usize = 32 << 20;
/// A fully sent current segment is rotated away (and deleted) once it is this large.
const ROTATE_EMPTY_MIN_BYTES: u64 = 64 << 10;
/// The size of a framed "sent" record, reserved on disk for every pending batch so that
/// recording removals never takes the queue over its bound.
const SENT_RECORD_LEN: u64 = (RECORD_HEADER_LEN + 9) as u64;
/// The delay suggested to clients refused because the queue is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn segment_header() -> [u8; HEADER_LEN] {
    crate::framing::segment_header(MAGIC, FORMAT_VERSION)
}

/// A batch record's fields.
#[derive(Debug)]
struct BatchRecord<'a> {
    id: u64,
    num_spans: u32,
    tenant: &'a str,
    /// Offset of the encoded request within the body.
    payload_start: usize,
}

fn parse_batch(body: &[u8]) -> Option<BatchRecord<'_>> {
    if body.first() != Some(&KIND_BATCH) {
        return None;
    }
    let id = u64::from_le_bytes(body.get(1..9)?.try_into().ok()?);
    let num_spans = u32::from_le_bytes(body.get(9..13)?.try_into().ok()?);
    let tenant_len = u16::from_le_bytes(body.get(13..15)?.try_into().ok()?) as usize;
    let tenant = std::str::from_utf8(body.get(15..15 + tenant_len)?).ok()?;
    Some(BatchRecord {
        id,
        num_spans,
        tenant,
        payload_start: 15 + tenant_len,
    })
}

fn parse_sent(body: &[u8]) -> Option<u64> {
    if body.first() != Some(&KIND_SENT) || body.len() != 9 {
        return None;
    }
    Some(u64::from_le_bytes(body.get(1..9)?.try_into().ok()?))
}

/// A pending batch: where it is on disk.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    id: u64,
    seq: u64,
    /// Offset of the record (its header) in the segment.
    offset: u64,
    body_len: usize,
    tenant: TenantId,
    num_spans: usize,
}

#[derive(Debug, Default)]
struct DispatchState {
    /// Pending batches in send order, with their encoded request when cached.
    pending: VecDeque<(Entry, Option<Bytes>)>,
    cached_bytes: usize,
    closed: bool,
}

/// What consumers take batches from; filled by the writer after each commit.
#[derive(Debug, Default)]
struct Dispatch {
    state: Mutex<DispatchState>,
    ready: Notify,
}

impl Dispatch {
    fn push(&self, entry: Entry, payload: Option<Bytes>) {
        let mut state = self.state.lock();
        let payload = payload.filter(|bytes| state.cached_bytes + bytes.len() <= CACHE_MAX_BYTES);
        if let Some(bytes) = &payload {
            state.cached_bytes += bytes.len();
        }
        state.pending.push_back((entry, payload));
    }
}

#[derive(Debug)]
enum Command {
    Append(QueueItem),
    Sent(u64),
    Barrier(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Limits beyond the bytes on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) max_bytes: u64,
    /// At most this many batches (`sizer: requests`) or spans (`sizer: items`).
    pub(crate) max_count: Option<(QueueSizer, u64)>,
}

/// Handle to one exporter's persistent queue.
#[derive(Debug)]
pub(crate) struct PersistentQueue {
    exporter: String,
    dir: PathBuf,
    commands: mpsc::Sender<Command>,
    dispatch: Arc<Dispatch>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: Arc<CollectorMetrics>,
}

/// What a restart found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub(crate) pending_batches: usize,
    pub(crate) pending_spans: usize,
    pub(crate) damaged_bytes: usize,
}

impl PersistentQueue {
    /// Opens (or creates) the queue in `config.directory`, finds what was pending and
    /// starts the writer thread. Blocking: call from the blocking pool.
    pub(crate) fn open(
        exporter: &str,
        config: &PersistentQueueConfig,
        limits: QueueLimits,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<(PersistentQueue, Recovered), QueueError> {
        let dir = config.directory.clone();
        std::fs::create_dir_all(&dir).map_err(|source| QueueError::Io {
            path: dir.clone(),
            source,
        })?;
        let replayed = replay(&dir)?;
        let dispatch = Arc::new(Dispatch::default());
        let recovered = Recovered {
            pending_batches: replayed.pending.len(),
            pending_spans: replayed.pending.iter().map(|entry| entry.num_spans).sum(),
            damaged_bytes: replayed.damaged_bytes,
        };
        let mut writer = Writer {
            exporter: exporter.to_owned(),
            dir: dir.clone(),
            fsync: config.fsync,
            limits,
            segment_max_bytes: (limits.max_bytes / 16).clamp(64 << 10, 64 << 20),
            segments: replayed.segments,
            current_seq: replayed.last_seq + 1,
            current: None,
            entries: HashMap::new(),
            next_id: replayed.next_id,
            disk_bytes: 0,
            live_spans: 0,
            dispatch: Arc::clone(&dispatch),
            metrics: Arc::clone(&metrics),
            refusal_warning: WarnEvery::new(crate::collector::exporters::REFUSAL_WARNING_INTERVAL),
        };
        for entry in replayed.pending {
            writer
                .entries
                .insert(entry.id, (entry.seq, entry.num_spans));
            writer.live_spans += entry.num_spans as u64;
            dispatch.push(entry, None);
        }
        writer.disk_bytes = writer.segments.values().map(|segment| segment.bytes).sum();
        writer.delete_sent_segments();
        writer.open_segment()?;
        writer.publish_size();
        metrics.set_queue_capacity(exporter, writer.capacity());

        let (commands, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name(format!("spoor-queue-{}", exporter.replace('/', "-")))
            .spawn(move || writer.run(rx))
            .map_err(|source| QueueError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok((
            PersistentQueue {
                exporter: exporter.to_owned(),
                dir,
                commands,
                dispatch,
                writer: Mutex::new(Some(thread)),
                metrics,
            },
            recovered,
        ))
    }

    /// Writes a batch; its acks are committed once it is on disk, or failed when the
    /// queue is full or closed.
    pub(crate) async fn push(&self, item: QueueItem) -> Result<(), (ConsumeError, Vec<AckRef>)> {
        match self.commands.send(Command::Append(item)).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Command::Append(mut item))) => {
                Err((ConsumeError::Closed, std::mem::take(&mut item.acks)))
            }
            Err(_) => Err((ConsumeError::Closed, Vec::new())),
        }
    }

    /// The next pending batch; `None` once closed.
    pub(crate) async fn next(&self) -> Option<Dispatched> {
        loop {
            let ready = self.dispatch.ready.notified();
            let next = {
                let mut state = self.dispatch.state.lock();
                if state.closed {
                    return None;
                }
                let next = state.pending.pop_front();
                if let Some((_, Some(bytes))) = &next {
                    state.cached_bytes -= bytes.len();
                }
                next
            };
            let Some((entry, cached)) = next else {
                ready.await;
                continue;
            };
            let payload = match cached {
                Some(bytes) => Ok(bytes),
                None => {
                    let dir = self.dir.clone();
                    let for_read = entry.clone();
                    tokio::task::spawn_blocking(move || read_payload(&dir, &for_read))
                        .await
                        .unwrap_or_else(|error| Err(format!("read task failed: {error}")))
                }
            };
            match payload {
                Ok(bytes) => {
                    return Some(Dispatched {
                        tenant: entry.tenant.clone(),
                        payload: Payload::Encoded(bytes),
                        num_spans: entry.num_spans,
                        deferred_acks: Vec::new(),
                        persistent: Some(entry),
                    })
                }
                Err(message) => {
                    // Checked when written and at start-up; damage since then is lost.
                    self.metrics
                        .exporter_send_failed(&self.exporter, entry.num_spans);
                    error!(
                        exporter = %self.exporter,
                        tenant = %entry.tenant,
                        num_spans = entry.num_spans,
                        error = %message,
                        "persistent queue batch cannot be read; dropping it"
                    );
                    let _ = self.commands.send(Command::Sent(entry.id)).await;
                }
            }
        }
    }

    /// The batch was exported (or refused for good): remove it.
    pub(crate) async fn sent(&self, entry: &Entry) {
        // Fails only once the writer stopped; the batch is then resent after restart.
        let _ = self.commands.send(Command::Sent(entry.id)).await;
    }

    /// Puts a batch back at the end, to be tried again later.
    pub(crate) fn requeue(&self, entry: Entry) {
        self.dispatch.push(entry, None);
        self.dispatch.ready.notify_waiters();
    }

    /// Whether no batch waits for a consumer (batches consumers hold are not counted).
    pub(crate) fn is_empty(&self) -> bool {
        self.dispatch.state.lock().pending.is_empty()
    }

    pub(crate) fn close(&self) {
        self.dispatch.state.lock().closed = true;
        self.dispatch.ready.notify_waiters();
    }

    /// Whether the writer thread answers.
    pub(crate) async fn probe(&self) -> bool {
        let (done, answered) = oneshot::channel();
        if self.commands.send(Command::Barrier(done)).await.is_err() {
            return false;
        }
        answered.await.is_ok()
    }

    /// Syncs and stops the writer thread. What was not sent stays on disk.
    pub(crate) async fn shutdown(&self) {
        self.close();
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).await.is_ok() {
            let _ = stopped.await;
        }
        let thread = self.writer.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Reads one batch's encoded request back from its segment.
fn read_payload(dir: &Path, entry: &Entry) -> Result<Bytes, String> {
    let path = segment_path(dir, entry.seq);
    let mut file = File::open(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    file.seek(SeekFrom::Start(entry.offset))
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let mut record = vec![0u8; RECORD_HEADER_LEN + entry.body_len];
    file.read_exact(&mut record)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let body =
        record_at(&record, 0).ok_or_else(|| format!("{}: checksum mismatch", path.display()))?;
    let batch =
        parse_batch(body).ok_or_else(|| format!("{}: not a batch record", path.display()))?;
    if batch.id != entry.id {
        return Err(format!(
            "{}: expected batch {}, found {}",
            path.display(),
            entry.id,
            batch.id
        ));
    }
    let payload_start = RECORD_HEADER_LEN + batch.payload_start;
    Ok(Bytes::from(record).slice(payload_start..))
}

#[derive(Debug, Default, Clone, Copy)]
struct SegmentState {
    bytes: u64,
    /// Pending batches in this segment.
    live: usize,
}

/// What [`replay`] found.
#[derive(Debug, Default)]
struct Replayed {
    segments: BTreeMap<u64, SegmentState>,
    pending: Vec<Entry>,
    last_seq: u64,
    next_id: u64,
    damaged_bytes: usize,
}

/// Reads every segment: batches minus those recorded as sent, in their original order.
fn replay(dir: &Path) -> Result<Replayed, QueueError> {
    let io_error = |path: &Path, source| QueueError::Io {
        path: path.to_owned(),
        source,
    };
    let mut seqs = Vec::new();
    for dir_entry in std::fs::read_dir(dir).map_err(|source| io_error(dir, source))? {
        let dir_entry = dir_entry.map_err(|source| io_error(dir, source))?;
        let name = dir_entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|name| name.strip_suffix(".seg"))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        seqs.push(seq);
    }
    seqs.sort_unstable();
    let mut replayed = Replayed::default();
    let mut batches: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut sent: HashSet<u64> = HashSet::new();
    for &seq in &seqs {
        let path = segment_path(dir, seq);
        let data = std::fs::read(&path).map_err(|source| io_error(&path, source))?;
        replayed.last_seq = seq;
        replayed.segments.insert(
            seq,
            SegmentState {
                bytes: data.len() as u64,
                live: 0,
            },
        );
        if data.len() < HEADER_LEN {
            // Created but never written (a crash right after creation).
            continue;
        }
        if &data[..8] != MAGIC {
            return Err(QueueError::Foreign { path });
        }
        let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        if version != FORMAT_VERSION {
            return Err(QueueError::UnsupportedVersion { path, version });
        }
        let mut offset = HEADER_LEN;
        while offset < data.len() {
            let Some(body) = record_at(&data, offset) else {
                // Damage or a torn tail: resume at the next intact record, if any.
                let resume = (offset + 1..data.len())
                    .find(|&candidate| record_at(&data, candidate).is_some())
                    .unwrap_or(data.len());
                replayed.damaged_bytes += resume - offset;
                offset = resume;
                continue;
            };
            if let Some(batch) = parse_batch(body) {
                replayed.next_id = replayed.next_id.max(batch.id + 1);
                match TenantId::new(batch.tenant) {
                    Ok(tenant) => {
                        batches.insert(
                            batch.id,
                            Entry {
                                id: batch.id,
                                seq,
                                offset: offset as u64,
                                body_len: body.len(),
                                tenant,
                                num_spans: batch.num_spans as usize,
                            },
                        );
                    }
                    Err(error) => warn!(
                        path = %path.display(),
                        %error,
                        "persistent queue batch with an invalid tenant; skipping it"
                    ),
                }
            } else if let Some(id) = parse_sent(body) {
                // Defensive: segments are deleted oldest first, so a surviving removal
                // refers to an ID below the surviving batches'; never reusing it keeps
                // that true whatever the deletion order.
                replayed.next_id = replayed.next_id.max(id + 1);
                sent.insert(id);
            }
            offset += RECORD_HEADER_LEN + body.len();
        }
    }
    for (id, entry) in batches {
        if sent.contains(&id) {
            continue;
        }
        if let Some(segment) = replayed.segments.get_mut(&entry.seq) {
            segment.live += 1;
        }
        replayed.pending.push(entry);
    }
    Ok(replayed)
}

/// The writer thread's state.
struct Writer {
    exporter: String,
    dir: PathBuf,
    fsync: bool,
    limits: QueueLimits,
    segment_max_bytes: u64,
    segments: BTreeMap<u64, SegmentState>,
    current_seq: u64,
    current: Option<File>,
    /// Pending batches: id → (segment, spans).
    entries: HashMap<u64, (u64, usize)>,
    next_id: u64,
    disk_bytes: u64,
    live_spans: u64,
    dispatch: Arc<Dispatch>,
    metrics: Arc<CollectorMetrics>,
    refusal_warning: WarnEvery,
}

/// One append that made it to disk, to be committed after the group's fsync.
struct Appended {
    entry: Entry,
    payload: Bytes,
    acks: Vec<AckRef>,
}

impl Writer {
    fn capacity(&self) -> u64 {
        match self.limits.max_count {
            Some((QueueSizer::Requests | QueueSizer::Items, count)) => count,
            _ => self.limits.max_bytes,
        }
    }

    fn size(&self) -> u64 {
        match self.limits.max_count {
            Some((QueueSizer::Requests, _)) => self.entries.len() as u64,
            Some((QueueSizer::Items, _)) => self.live_spans,
            _ => self.disk_bytes,
        }
    }

    /// Bytes on disk plus what is promised: a "sent" record for every pending batch and
    /// the header of every segment the queue may still open, so neither can take the
    /// directory over `max_bytes`.
    fn committed_bytes(&self) -> u64 {
        let segment_headers =
            HEADER_LEN as u64 * (self.limits.max_bytes / self.segment_max_bytes + 2);
        self.disk_bytes + (self.entries.len() as u64 + 1) * SENT_RECORD_LEN + segment_headers
    }

    fn publish_size(&self) {
        self.metrics.set_queue_size(&self.exporter, self.size());
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP_COMMANDS {
                match rx.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            let mut appended = Vec::new();
            let mut barriers = Vec::new();
            let mut shutdown = None;
            for command in group {
                match command {
                    Command::Append(item) => match self.append(item) {
                        Ok(done) => appended.push(done),
                        Err((refusal, num_spans, acks)) => {
                            self.metrics
                                .exporter_enqueue_failed(&self.exporter, num_spans);
                            if self.refusal_warning.ready() {
                                warn!(
                                    exporter = %self.exporter,
                                    num_spans,
                                    error = %refusal,
                                    "persistent queue refused data; clients are told to retry (logged once per 10s)"
                                );
                            }
                            fail_all(acks, &refusal);
                        }
                    },
                    Command::Sent(id) => self.record_sent(id),
                    Command::Barrier(done) => barriers.push(done),
                    Command::Shutdown(done) => shutdown = Some(done),
                }
            }
            if !appended.is_empty() {
                self.commit(appended);
            }
            self.publish_size();
            for barrier in barriers {
                let _ = barrier.send(());
            }
            if let Some(done) = shutdown {
                self.sync_current();
                info!(
                    exporter = %self.exporter,
                    pending_batches = self.entries.len(),
                    pending_spans = self.live_spans,
                    "persistent queue closed; pending batches are sent after the next start"
                );
                let _ = done.send(());
                return;
            }
        }
    }

    /// Makes the group durable, then acknowledges it and hands it to the consumers.
    fn commit(&mut self, appended: Vec<Appended>) {
        let synced = if self.fsync {
            match self.current.as_ref().map(File::sync_data) {
                Some(Err(error)) => Err(error),
                _ => Ok(()),
            }
        } else {
            Ok(())
        };
        let failure = synced.err().map(|error| {
            error!(exporter = %self.exporter, %error, "persistent queue fsync failed");
            ConsumeError::Internal(format!("persistent queue fsync failed: {error}"))
        });
        for Appended {
            entry,
            payload,
            acks,
        } in appended
        {
            match &failure {
                // Possibly not durable: the clients retry, and the copy on disk (if
                // any) is still sent; at-least-once either way.
                Some(refusal) => fail_all(acks, refusal),
                None => commit_all(acks),
            }
            self.dispatch.push(entry, Some(payload));
        }
        self.dispatch.ready.notify_waiters();
    }

    #[allow(clippy::type_complexity)]
    fn append(
        &mut self,
        mut item: QueueItem,
    ) -> Result<Appended, (ConsumeError, usize, Vec<AckRef>)> {
        let num_spans = item.num_spans;
        let refuse = |error: ConsumeError, item: &mut QueueItem| {
            (error, num_spans, std::mem::take(&mut item.acks))
        };
        let full = ConsumeError::Full {
            what: "persistent sending queue",
            retry_after: FULL_RETRY_AFTER,
        };
        let id = self.next_id;
        let tenant = item.tenant.as_str().as_bytes();
        let mut body = Vec::with_capacity(15 + tenant.len() + encoded_request_len(&item.spans));
        body.push(KIND_BATCH);
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&u32::try_from(num_spans).unwrap_or(u32::MAX).to_le_bytes());
        body.extend_from_slice(
            &u16::try_from(tenant.len())
                .unwrap_or(u16::MAX)
                .to_le_bytes(),
        );
        body.extend_from_slice(tenant);
        let payload_start = body.len();
        encode_request_into(&item.spans, &mut body);
        let record_len = (RECORD_HEADER_LEN + body.len()) as u64;
        if record_len + HEADER_LEN as u64 > self.limits.max_bytes || body.len() > MAX_RECORD_LEN {
            return Err(refuse(
                ConsumeError::Internal(format!(
                    "a batch of {record_len} bytes is larger than the persistent queue ({} bytes)",
                    self.limits.max_bytes
                )),
                &mut item,
            ));
        }
        if !self.entries.is_empty() {
            let over_count = match self.limits.max_count {
                Some((QueueSizer::Requests, max)) => self.entries.len() as u64 + 1 > max,
                Some((QueueSizer::Items, max)) => self.live_spans + num_spans as u64 > max,
                _ => false,
            };
            if over_count {
                return Err(refuse(full, &mut item));
            }
        }
        if self.committed_bytes() + record_len > self.limits.max_bytes {
            self.reclaim_when_empty(true);
            if self.committed_bytes() + record_len > self.limits.max_bytes {
                return Err(refuse(full, &mut item));
            }
        }
        let mut framed = Vec::with_capacity(record_len as usize);
        frame_record(&body, &mut framed);
        let offset = match self.write(&framed) {
            Ok(offset) => offset,
            Err(error) => {
                error!(exporter = %self.exporter, %error, "persistent queue write failed");
                return Err(refuse(
                    ConsumeError::Internal(format!("persistent queue write failed: {error}")),
                    &mut item,
                ));
            }
        };
        self.next_id += 1;
        self.entries.insert(id, (self.current_seq, num_spans));
        self.live_spans += num_spans as u64;
        if let Some(segment) = self.segments.get_mut(&self.current_seq) {
            segment.live += 1;
        }
        let body_len = body.len();
        let payload = Bytes::from(body).slice(payload_start..);
        Ok(Appended {
            entry: Entry {
                id,
                seq: self.current_seq,
                offset,
                body_len,
                tenant: item.tenant.clone(),
                num_spans,
            },
            payload,
            acks: std::mem::take(&mut item.acks),
        })
    }

    /// Appends framed bytes to the current segment (rotating first when it is full);
    /// returns the offset they were written at.
    fn write(&mut self, framed: &[u8]) -> std::io::Result<u64> {
        let current_bytes = self.segments.get(&self.current_seq).map_or(0, |s| s.bytes);
        if current_bytes > HEADER_LEN as u64
            && current_bytes + framed.len() as u64 > self.segment_max_bytes
        {
            self.rotate()?;
        }
        let offset = self.segments.get(&self.current_seq).map_or(0, |s| s.bytes);
        let result = match self.current.as_mut() {
            Some(file) => file.write_all(framed),
            None => Err(std::io::Error::other("no open segment")),
        };
        if let Err(error) = result {
            // The segment may now end in a partial record; continue in a fresh one
            // (replay skips the damage).
            let _ = self.rotate();
            return Err(error);
        }
        if let Some(segment) = self.segments.get_mut(&self.current_seq) {
            segment.bytes += framed.len() as u64;
        }
        self.disk_bytes += framed.len() as u64;
        Ok(offset)
    }

    fn record_sent(&mut self, id: u64) {
        let Some((seq, num_spans)) = self.entries.remove(&id) else {
            return;
        };
        self.live_spans -= num_spans as u64;
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.live -= 1;
        }
        let mut body = Vec::with_capacity(9);
        body.push(KIND_SENT);
        body.extend_from_slice(&id.to_le_bytes());
        let mut framed = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
        frame_record(&body, &mut framed);
        if let Err(error) = self.write(&framed) {
            // Only costs a resend after a restart.
            warn!(exporter = %self.exporter, %error, "persistent queue could not record a sent batch");
        }
        self.delete_sent_segments();
        if self.entries.is_empty() {
            self.reclaim_when_empty(false);
        }
    }

    /// When nothing is pending, the current segment holds only sent batches: start a new
    /// one and delete it (when the space is `needed`, or once it is worth a new file).
    fn reclaim_when_empty(&mut self, needed: bool) {
        let current_bytes = self.segments.get(&self.current_seq).map_or(0, |s| s.bytes);
        let worth_it = current_bytes >= ROTATE_EMPTY_MIN_BYTES.min(self.segment_max_bytes)
            || (needed && current_bytes > HEADER_LEN as u64);
        if self.entries.is_empty() && worth_it {
            if let Err(error) = self.rotate() {
                warn!(exporter = %self.exporter, %error, "persistent queue segment rotation failed");
            }
        }
        self.delete_sent_segments();
    }

    /// Deletes segments from the oldest while they hold no pending batch, never the
    /// current one.
    fn delete_sent_segments(&mut self) {
        while let Some((&seq, segment)) = self.segments.iter().next() {
            if seq == self.current_seq || segment.live > 0 {
                break;
            }
            let path = segment_path(&self.dir, seq);
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %path.display(), %error, "cannot delete a sent queue segment");
                    break;
                }
            }
            self.disk_bytes -= segment.bytes;
            self.segments.remove(&seq);
        }
    }

    fn sync_current(&self) {
        if let Some(file) = &self.current {
            if let Err(error) = file.sync_data() {
                warn!(exporter = %self.exporter, %error, "persistent queue fsync failed");
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.fsync {
            self.sync_current();
        }
        self.current_seq += 1;
        self.open_segment()
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        self.delete_sent_segments();
        Ok(())
    }

    /// Creates the segment `current_seq` with its header, and makes its name durable.
    fn open_segment(&mut self) -> Result<(), QueueError> {
        let path = segment_path(&self.dir, self.current_seq);
        let io_error = |source| QueueError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_error)?;
        file.write_all(&segment_header()).map_err(io_error)?;
        if self.fsync {
            file.sync_all().map_err(io_error)?;
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|source| QueueError::Io {
                    path: self.dir.clone(),
                    source,
                })?;
        }
        self.segments.insert(
            self.current_seq,
            SegmentState {
                bytes: HEADER_LEN as u64,
                live: 0,
            },
        );
        self.disk_bytes += HEADER_LEN as u64;
        self.current = Some(file);
        Ok(())
    }
}

impl PersistentQueue {
    pub(crate) fn directory(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::delivery::Delivery;
    use crate::otlp::{OtlpResourceSpans, OtlpScopeSpans, OtlpSpan};

    fn spans(n: usize, tag: u8) -> Vec<OtlpResourceSpans> {
        vec![OtlpResourceSpans {
            resource: None,
            scope_spans: vec![OtlpScopeSpans {
                scope: None,
                spans: (0..n)
                    .map(|i| OtlpSpan {
                        trace_id: vec![tag; 16],
                        span_id: (i as u64).to_le_bytes().to_vec(),
                        name: "x".repeat(100),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }]
    }

    fn item(n: usize, tag: u8, tenant: &str) -> (Delivery, QueueItem) {
        let (delivery, ack) = Delivery::new(Vec::new());
        (
            delivery,
            QueueItem {
                tenant: TenantId::new(tenant).expect("tenant"),
                spans: Arc::new(spans(n, tag)),
                num_spans: n,
                acks: vec![ack],
            },
        )
    }

    fn open(dir: &Path, max_bytes: u64) -> (PersistentQueue, Recovered) {
        PersistentQueue::open(
            "otlp",
            &PersistentQueueConfig {
                directory: dir.to_owned(),
                max_bytes,
                fsync: true,
            },
            QueueLimits {
                max_bytes,
                max_count: None,
            },
            Arc::new(CollectorMetrics::new()),
        )
        .expect("open")
    }

    fn dir_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .expect("dir")
            .map(|entry| entry.expect("entry").metadata().expect("meta").len())
            .sum()
    }

    fn tag_of(dispatched: &Dispatched) -> u8 {
        match &dispatched.payload {
            Payload::Encoded(bytes) => {
                let request =
                    <crate::otlp::OtlpExportRequest as prost::Message>::decode(bytes.as_ref())
                        .expect("decodes");
                request.resource_spans[0].scope_spans[0].spans[0].trace_id[0]
            }
            Payload::Spans(_) => panic!("persistent queues hand out encoded requests"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_batches_survive_a_restart_until_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (queue, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered, Recovered::default());
        for tag in 1..=3u8 {
            let (delivery, item) = item(5, tag, if tag == 2 { "acme" } else { "single-tenant" });
            queue.push(item).await.expect("pushed");
            assert!(delivery.wait().await.is_ok(), "acknowledged once on disk");
        }
        let first = queue.next().await.expect("first");
        assert_eq!(tag_of(&first), 1);
        queue.sent(first.persistent.as_ref().expect("entry")).await;
        assert!(queue.probe().await);
        // A crash: no shutdown, the handle is simply gone.
        drop(queue);

        let (queue, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered.pending_batches, 2);
        assert_eq!(recovered.pending_spans, 10);
        let second = queue.next().await.expect("second");
        assert_eq!((tag_of(&second), second.tenant.as_str()), (2, "acme"));
        let third = queue.next().await.expect("third");
        assert_eq!(tag_of(&third), 3);
        queue.sent(second.persistent.as_ref().expect("entry")).await;
        queue.sent(third.persistent.as_ref().expect("entry")).await;
        queue.shutdown().await;

        let (queue, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered.pending_batches, 0);
        queue.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounded_in_bytes_and_space_comes_back_once_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max_bytes = 64 << 10;
        let (queue, _) = open(dir.path(), max_bytes);
        let mut accepted = 0;
        let mut refused = 0;
        for i in 0..200u8 {
            let (delivery, item) = item(10, i, "single-tenant");
            queue.push(item).await.expect("sent to writer");
            match delivery.wait().await {
                Ok(()) => accepted += 1,
                Err(ConsumeError::Full { .. }) => refused += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert!(
                dir_bytes(dir.path()) <= max_bytes,
                "disk use above the bound"
            );
        }
        assert!(
            accepted > 10 && refused > 0,
            "accepted {accepted}, refused {refused}"
        );
        // Send everything: the queue empties and accepts again.
        for _ in 0..accepted {
            let dispatched = queue.next().await.expect("pending");
            queue
                .sent(dispatched.persistent.as_ref().expect("entry"))
                .await;
        }
        assert!(queue.probe().await);
        let (delivery, item) = item(10, 0, "single-tenant");
        queue.push(item).await.expect("sent to writer");
        assert!(delivery.wait().await.is_ok());
        assert!(dir_bytes(dir.path()) <= max_bytes);
        queue.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drained_queue_restarts_clean_and_keeps_new_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (queue, _) = open(dir.path(), 1 << 20);
        for tag in 0..5u8 {
            let (delivery, item) = item(2, tag, "single-tenant");
            queue.push(item).await.expect("pushed");
            assert!(delivery.wait().await.is_ok());
        }
        queue.shutdown().await;
        // After a restart the removals go to a new segment; the old one, fully sent, is
        // deleted: what is left on disk records removals of batches no longer there.
        let (queue, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered.pending_batches, 5);
        for _ in 0..5 {
            let dispatched = queue.next().await.expect("pending");
            queue
                .sent(dispatched.persistent.as_ref().expect("entry"))
                .await;
        }
        queue.shutdown().await;

        let (queue, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered.pending_batches, 0);
        let (delivery, item) = item(3, 99, "single-tenant");
        queue.push(item).await.expect("pushed");
        assert!(delivery.wait().await.is_ok());
        drop(queue);

        let (queue, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(
            recovered.pending_batches, 1,
            "the new batch must not look sent"
        );
        queue.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_and_damage_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (queue, _) = open(dir.path(), 1 << 20);
        for tag in 1..=3u8 {
            let (delivery, item) = item(2, tag, "single-tenant");
            queue.push(item).await.expect("pushed");
            assert!(delivery.wait().await.is_ok());
        }
        queue.shutdown().await;
        let segment = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|entry| entry.expect("entry").path())
            .max()
            .expect("segment");
        let mut data = std::fs::read(&segment).expect("read");
        // Corrupt the middle record's body and append half a record.
        let first_len =
            u32::from_le_bytes(data[HEADER_LEN..HEADER_LEN + 4].try_into().expect("4")) as usize;
        let second_body = HEADER_LEN + RECORD_HEADER_LEN + first_len + RECORD_HEADER_LEN + 20;
        data[second_body] ^= 0xff;
        data.extend_from_slice(&[1, 2, 3, 4, 5]);
        std::fs::write(&segment, &data).expect("write");

        let (queue, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered.pending_batches, 2);
        assert!(recovered.damaged_bytes > 0);
        let tags = [
            queue.next().await.expect("a"),
            queue.next().await.expect("b"),
        ]
        .map(|d| tag_of(&d));
        assert_eq!(tags, [1, 3]);
        queue.shutdown().await;
    }
}
