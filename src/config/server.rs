//! Validated spoor-server configuration. These types are what the server consumes; the
//! loader builds them from the YAML shape documented in docs/configuration.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything spoor-server needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub api: ApiConfig,
    pub otlp: OtlpReceiverConfig,
    pub ingest: IngestConfig,
    pub wal: WalConfig,
    pub head: HeadConfig,
    pub storage: StorageConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

/// The Tempo HTTP API plus /ready, /metrics, /api/echo, /api/status/buildinfo.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub listen_address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpReceiverConfig {
    pub grpc: OtlpGrpcConfig,
    pub http: OtlpHttpConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpGrpcConfig {
    pub listen_address: SocketAddr,
    /// Largest accepted (decompressed) request message.
    pub max_recv_msg_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpHttpConfig {
    pub listen_address: SocketAddr,
    /// Largest accepted request body (after decompression).
    pub max_request_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// Bytes of requests being made durable at once; beyond this, requests are refused with
    /// RESOURCE_EXHAUSTED / 429 so memory stays bounded.
    pub max_inflight_bytes: u64,
    /// The delay suggested to refused clients (RetryInfo / Retry-After).
    pub retry_after: Duration,
}

/// When an append is considered durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging (group commit across concurrent requests). The default.
    Always,
    /// fsync at most every `interval`; an acknowledged batch can be lost on power failure
    /// (not on a process crash) within that window.
    Interval(Duration),
    /// Never fsync explicitly; the OS writes back when it likes.
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// A segment is sealed when it grows past this size.
    pub segment_max_bytes: u64,
}

/// When live traces are cut into a block.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadConfig {
    /// A trace that received no spans for this long is cut into the next block.
    pub trace_idle: Duration,
    /// Cut a block when the head holds this many bytes.
    pub max_block_bytes: u64,
    /// Cut a block at least this often while the head holds data.
    pub max_block_duration: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub backend: BackendConfig,
    /// How often the list of blocks in the backend is refreshed.
    pub blocklist_poll: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    /// Blocks under a local directory.
    Local {
        path: PathBuf,
    },
    S3(S3Config),
}

#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000` for an S3-compatible server; None means AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Key prefix inside the bucket ("" for none).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    pub force_path_style: bool,
    /// Allow plain-HTTP endpoints.
    pub allow_http: bool,
    /// Static credentials; when None they come from the standard AWS environment
    /// variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    /// Upper bound for the whole ordered drain after SIGTERM.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// An env-filter directive, e.g. `info` or `spoor=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald when JOURNAL_STREAM is set, text otherwise.
    Auto,
    Text,
    Json,
    Journald,
}
