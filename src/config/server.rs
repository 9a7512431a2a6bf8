//! Validated spoor-server configuration. These types are what the server consumes; the
//! loader builds them from the YAML shape documented in docs/configuration.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::ServerTlsConfig;
use crate::auth::AuthConfig;
use crate::tenant::TenantId;

/// Everything spoor-server needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `api`: the HTTP API.
    pub api: ApiConfig,
    /// `otlp`: the OTLP receivers.
    pub otlp: OtlpReceiverConfig,
    /// `ingest`: admission of incoming requests.
    pub ingest: IngestConfig,
    /// `wal`: the write-ahead log.
    pub wal: WalConfig,
    /// `head`: live traces and block cutting.
    pub head: HeadConfig,
    /// `storage`: where blocks are stored.
    pub storage: StorageConfig,
    /// `query`: limits and defaults of search and metrics queries.
    pub query: QueryConfig,
    /// `retention`: deletion of blocks past their retention.
    pub retention: RetentionConfig,
    /// `compaction`: merging of small blocks.
    pub compaction: CompactionConfig,
    /// `limits`: per-tenant ingest limits.
    pub limits: LimitsConfig,
    /// `metrics_generator`: service-graph and span metrics derived from spans.
    pub metrics_generator: GeneratorConfig,
    /// `cluster`: the other servers sharing the bucket.
    pub cluster: ClusterConfig,
    /// `shutdown`: the drain after SIGTERM.
    pub shutdown: ShutdownConfig,
    /// `log`: the server's own logs.
    pub log: LogConfig,
}

/// The Tempo HTTP API plus /ready, /metrics, /api/echo, /api/status/buildinfo.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// `api.listen_address`.
    pub listen_address: SocketAddr,
    /// `api.tls`; `None` for plain HTTP.
    pub tls: Option<ServerTlsConfig>,
    /// `api.auth`: required on everything but `/ready`; empty means open.
    pub auth: AuthConfig,
}

/// The OTLP receivers.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpReceiverConfig {
    /// `otlp.grpc`.
    pub grpc: OtlpGrpcConfig,
    /// `otlp.http`.
    pub http: OtlpHttpConfig,
}

/// The OTLP/gRPC receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpGrpcConfig {
    /// `otlp.grpc.listen_address`.
    pub listen_address: SocketAddr,
    /// Largest accepted (decompressed) request message.
    pub max_recv_msg_bytes: usize,
    /// `otlp.grpc.tls`; `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// `otlp.grpc.auth`; empty means open.
    pub auth: AuthConfig,
}

/// The OTLP/HTTP receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpHttpConfig {
    /// `otlp.http.listen_address`.
    pub listen_address: SocketAddr,
    /// Largest accepted request body (after decompression).
    pub max_request_body_bytes: usize,
    /// `otlp.http.tls`; `None` for plain HTTP.
    pub tls: Option<ServerTlsConfig>,
    /// `otlp.http.auth`; empty means open.
    pub auth: AuthConfig,
}

/// Admission of incoming OTLP requests.
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

/// The write-ahead log.
#[derive(Debug, Clone, PartialEq)]
pub struct WalConfig {
    /// `wal.path`: directory of the WAL segments.
    pub dir: PathBuf,
    /// `wal.fsync`.
    pub fsync: FsyncPolicy,
    /// A segment is sealed when it grows past this size.
    pub segment_max_bytes: u64,
}

/// When live traces are cut into a block.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadConfig {
    /// At a cut, traces quiet for this long go into the block; busier ones stay live.
    pub trace_idle: Duration,
    /// Cut a block when live traces hold this many bytes; twice this (live plus waiting
    /// for upload) is where ingest starts refusing.
    pub max_block_bytes: u64,
    /// Cut a block when the oldest live trace is this old.
    pub max_block_duration: Duration,
}

/// Where blocks are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// `storage.backend` with its section.
    pub backend: BackendConfig,
    /// How often the list of blocks in the backend is refreshed.
    pub blocklist_poll: Duration,
}

/// The block store.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    /// Blocks under a local directory.
    Local {
        /// `storage.local.path`.
        path: PathBuf,
    },
    /// Blocks in an S3-compatible bucket.
    S3(S3Config),
}

/// How long blocks are kept, like Tempo's compactor `block_retention`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    /// Blocks whose newest span ended longer ago than this are deleted.
    pub block_retention: Duration,
    /// Per-tenant overrides of `block_retention`.
    pub per_tenant: BTreeMap<TenantId, Duration>,
    /// How often the backend is swept for expired blocks.
    pub interval: Duration,
}

impl RetentionConfig {
    /// The retention that applies to `tenant`: its override, else the default.
    pub fn retention_for(&self, tenant: &TenantId) -> Duration {
        self.per_tenant
            .get(tenant)
            .copied()
            .unwrap_or(self.block_retention)
    }
}

/// Merging of small blocks into larger ones, like Tempo's compactor.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionConfig {
    /// Whether this server compacts.
    pub enabled: bool,
    /// Blocks are grouped by the window their newest span ended in.
    pub window: Duration,
    /// Most blocks merged into one (at least 2).
    pub max_input_blocks: usize,
    /// Most bytes (data + bloom) the inputs of one compaction hold together.
    pub max_block_bytes: u64,
    /// How often a compaction cycle runs.
    pub cycle: Duration,
    /// How long replaced blocks are kept before deletion.
    pub compacted_block_retention: Duration,
    /// How long a tenant's compaction lease in a shared bucket lasts unrenewed.
    pub lease_duration: Duration,
}

/// `storage.s3`.
#[derive(Clone, PartialEq)]
pub struct S3Config {
    /// Bucket name, never empty.
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000` for an S3-compatible server; None means AWS.
    pub endpoint: Option<String>,
    /// Region of the bucket.
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
    /// Set exactly when `access_key_id` is.
    pub secret_access_key: Option<String>,
}

// Hand-written so that logging the config (`?config`) never writes the secret key to
// the journal.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("force_path_style", &self.force_path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Limits and defaults of search, tag and TraceQL metrics queries.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryConfig {
    /// Traces returned when a search sends no `limit`; at most `max_result_limit`.
    pub default_result_limit: u32,
    /// Largest accepted search `limit`.
    pub max_result_limit: u32,
    /// Spans per spanset when a search sends no `spss`; at most `max_spans_per_span_set`.
    pub default_spans_per_span_set: u32,
    /// Largest accepted `spss`.
    pub max_spans_per_span_set: u32,
    /// Longest accepted search or tag query range.
    pub max_search_duration: Duration,
    /// Longest accepted metrics query range.
    pub max_metrics_duration: Duration,
    /// Series per metrics query before the response is marked partial.
    pub max_metrics_series: u32,
    /// Exemplars per metrics query at most.
    pub max_exemplars: u32,
    /// Step of a range query that sends none.
    pub metrics_default_step: MetricsStep,
    /// How far back "recent" data (no `start`/`end`) reaches into blocks, by write time.
    pub recent_window: Duration,
    /// How far apart in time the blocks holding parts of one trace may be and still be
    /// merged before evaluation.
    pub trace_merge_window: Duration,
}

/// `query.metrics_default_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsStep {
    /// Tempo's rule: the range divided into about 240 intervals, rounded down to a
    /// round step.
    Auto,
    /// This step, whatever the range.
    Fixed(Duration),
}

/// The other servers sharing the bucket, asked for the traces they hold in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `host:port` API addresses; names stand for every address they resolve to.
    pub peers: Vec<String>,
    /// How long a peer may take to answer.
    pub peer_timeout: Duration,
    /// `cluster.tls`: HTTPS to the peers; `None` for plain HTTP.
    pub tls: Option<PeerTlsConfig>,
    /// `cluster.auth`: the credential sent to peers.
    pub auth: Option<crate::auth::ClientAuth>,
}

/// `cluster.tls`, its files checked at load.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerTlsConfig {
    /// Extra trusted roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for peers requiring one.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// The ordered drain after SIGTERM.
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    /// Upper bound for the whole ordered drain after SIGTERM.
    pub timeout: Duration,
}

/// The server's own logs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// An env-filter directive, e.g. `info` or `spoor=debug,info`.
    pub level: String,
    /// `log.format`.
    pub format: LogFormat,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald when JOURNAL_STREAM is set, text otherwise.
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// Structured entries sent to journald.
    Journald,
}

/// The metrics generator: service graphs and span metrics from ingested spans.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// What applies to tenants without an override.
    pub defaults: GeneratorTenantConfig,
    /// `metrics_generator.per_tenant`, resolved against the defaults.
    pub per_tenant: BTreeMap<TenantId, GeneratorTenantConfig>,
    /// `metrics_generator.stale_after`.
    pub stale_after: Duration,
    /// `metrics_generator.ingestion_time_range_slack`; zero counts every span.
    pub ingestion_time_range_slack: Duration,
    /// `metrics_generator.queue_size`, in ingest requests.
    pub queue_size: usize,
    /// `metrics_generator.service_graphs`.
    pub service_graphs: ServiceGraphsConfig,
    /// `metrics_generator.span_metrics`.
    pub span_metrics: SpanMetricsConfig,
    /// `metrics_generator.remote_write`.
    pub remote_write: RemoteWriteConfig,
}

impl GeneratorConfig {
    /// Whether any tenant can have metrics; when not, the generator does not start.
    pub fn enabled_anywhere(&self) -> bool {
        self.defaults.enabled || self.per_tenant.values().any(|tenant| tenant.enabled)
    }

    /// The settings of `tenant`: its override, else the defaults.
    pub fn for_tenant(&self, tenant: &TenantId) -> &GeneratorTenantConfig {
        self.per_tenant.get(tenant).unwrap_or(&self.defaults)
    }
}

/// What can differ per tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorTenantConfig {
    /// Whether any metrics are derived for the tenant.
    pub enabled: bool,
    /// The `service-graphs` processor runs.
    pub service_graphs: bool,
    /// The `span-metrics` processor runs.
    pub span_metrics: bool,
    /// Series of the tenant at most.
    pub max_active_series: usize,
}

/// `metrics_generator.service_graphs`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceGraphsConfig {
    /// How long half an edge waits for its other half.
    pub wait: Duration,
    /// Half edges waiting at most, per tenant.
    pub max_items: usize,
    /// Ascending, finite, positive upper bounds in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Attribute names (as written in spans).
    pub dimensions: Vec<String>,
    /// Dimensions labelled `client_<dim>` and `server_<dim>`.
    pub enable_client_server_prefix: bool,
    /// Edges to a virtual node carry `virtual_node`.
    pub enable_virtual_node_label: bool,
    /// Attributes naming the server of an unpaired client span, in order.
    pub peer_attributes: Vec<String>,
}

/// `metrics_generator.span_metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanMetricsConfig {
    /// Ascending, finite, positive upper bounds in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Attribute names (as written in spans).
    pub dimensions: Vec<String>,
    /// Label `service`.
    pub intrinsic_service: bool,
    /// Label `span_name`.
    pub intrinsic_span_name: bool,
    /// Label `span_kind`.
    pub intrinsic_span_kind: bool,
    /// Label `status_code`.
    pub intrinsic_status_code: bool,
    /// Label `status_message`.
    pub intrinsic_status_message: bool,
}

/// `metrics_generator.remote_write`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteConfig {
    /// Receivers; empty means no remote write.
    pub endpoints: Vec<RemoteWriteEndpoint>,
    /// How often the series are pushed.
    pub interval: Duration,
    /// Timeout of one push.
    pub timeout: Duration,
    /// Label name → value, names valid Prometheus label names.
    pub external_labels: BTreeMap<String, String>,
    /// Label carrying the tenant ID, if any.
    pub inject_tenant_id_as: Option<String>,
}

/// One remote-write receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteEndpoint {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// Header name → value, both valid HTTP header parts.
    pub headers: Vec<(String, String)>,
    /// Send `X-Scope-OrgID: <tenant>`.
    pub send_tenant_header: bool,
}

/// Per-tenant limits on ingest and queries.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// What applies to tenants without an override.
    pub defaults: TenantLimits,
    /// `limits.per_tenant`, resolved against the defaults.
    pub per_tenant: BTreeMap<TenantId, TenantLimits>,
}

impl LimitsConfig {
    /// The limits of `tenant`: its override, else the defaults.
    pub fn for_tenant(&self, tenant: &TenantId) -> &TenantLimits {
        self.per_tenant.get(tenant).unwrap_or(&self.defaults)
    }
}

/// The limits of one tenant; the default is no limit at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantLimits {
    /// Bytes per second; `None` is unlimited.
    pub ingestion_rate: Option<u64>,
    /// Bytes at once above the rate (at least one second of the rate).
    pub ingestion_burst: u64,
    /// Longest attribute value in bytes; `None` is unlimited.
    pub max_attribute_value_length: Option<usize>,
    /// Live traces at most; `None` is unlimited.
    pub max_live_traces: Option<usize>,
    /// Bytes one live trace may hold; `None` is unlimited.
    pub max_bytes_per_trace: Option<usize>,
    /// Queries running at once; `None` is unlimited.
    pub max_concurrent_queries: Option<usize>,
    /// Replaces `query.max_search_duration` for the tenant.
    pub max_search_duration: Option<Duration>,
    /// Replaces `query.max_result_limit` for the tenant.
    pub max_result_limit: Option<u32>,
}
