//! The server config as written in `/etc/spoor/server.yaml`, `SPOOR_` environment
//! variables and command-line flags, before validation.
//!
//! The `Default` impls below are the only place built-in defaults live: they are
//! serialized as the bottom figment layer, they define the set of known keys (anything
//! not present in the serialized defaults is an unknown key), and docs/configuration.md
//! documents the same values. The doc comments on the fields are user documentation and
//! are mirrored in that file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, expected_one_of, option_duration, ByteSize, RawFsync, RawStep};

/// Top level of `server.yaml`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServerConfig {
    /// The HTTP API: Tempo's query API, `/ready`, `/metrics`, `/api/echo`,
    /// `/api/status/buildinfo`.
    pub(crate) api: RawApi,
    /// The OTLP receivers that applications and collectors send spans to.
    pub(crate) otlp: RawOtlp,
    /// Admission of incoming OTLP requests.
    pub(crate) ingest: RawIngest,
    /// The write-ahead log that makes acknowledged spans durable.
    pub(crate) wal: RawWal,
    /// Live traces in memory and when they are cut into blocks.
    pub(crate) head: RawHead,
    /// Where blocks are stored.
    pub(crate) storage: RawStorage,
    /// Limits and defaults of search, tag and TraceQL metrics queries.
    pub(crate) query: RawQuery,
    /// Deletion of blocks past their retention.
    pub(crate) retention: RawRetention,
    /// Merging of small blocks into larger ones.
    pub(crate) compaction: RawCompaction,
    /// Per-tenant limits on what is ingested.
    pub(crate) limits: RawLimits,
    /// Service-graph and span metrics derived from ingested spans.
    pub(crate) metrics_generator: RawMetricsGenerator,
    /// The other servers sharing the bucket.
    pub(crate) cluster: RawCluster,
    /// The ordered drain after SIGTERM.
    pub(crate) shutdown: RawShutdown,
    /// The server's own logs.
    pub(crate) log: RawLog,
}

/// `api:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApi {
    /// IP address and port of the HTTP API (Grafana's Tempo datasource points here).
    pub(crate) listen_address: String,
    /// HTTPS for the API, `/metrics` and `/ready`.
    pub(crate) tls: RawTls,
    /// Credentials required on every request except `/ready` (including `/metrics`).
    pub(crate) auth: RawAuth,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen_address: "127.0.0.1:3200".to_owned(),
            tls: RawTls::default(),
            auth: RawAuth::default(),
        }
    }
}

/// `api.tls:`, `otlp.grpc.tls:`, `otlp.http.tls:`. TLS is on when `cert_file` and
/// `key_file` are set; the files are re-read on SIGHUP and when they change, and a reload
/// that fails keeps the previous certificates.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTls {
    /// PEM certificate chain, the server's certificate first. Empty: no TLS.
    pub(crate) cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub(crate) key_file: String,
    /// PEM CA certificates. When set, clients must present a certificate signed by one of
    /// them (mutual TLS); the handshake fails otherwise.
    pub(crate) client_ca_file: String,
    /// How often the files' modification times are checked for a reload.
    #[serde(with = "duration")]
    pub(crate) reload_interval: Duration,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            reload_interval: super::tls::DEFAULT_TLS_RELOAD_INTERVAL,
        }
    }
}

/// `api.auth`, `otlp.grpc.auth`, `otlp.http.auth`: the credentials a listener accepts. With
/// none listed the listener is open.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAuth {
    /// Accepted `Authorization: Bearer <token>` tokens.
    pub(crate) bearer: Vec<RawBearerCredential>,
    /// Accepted `Authorization: Basic` users.
    pub(crate) basic: Vec<RawBasicCredential>,
}

/// One entry of `auth.bearer`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBearerCredential {
    /// File holding the token (read at start-up, trailing newline removed), e.g.
    /// `/run/credentials/spoor-server.service/api-token` with systemd `LoadCredential=`.
    pub(crate) token_file: Option<PathBuf>,
    /// When set, every request with this token belongs to this tenant, and an
    /// `X-Scope-OrgID` naming another tenant is refused.
    pub(crate) tenant: Option<String>,
}

/// One entry of `auth.basic`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBasicCredential {
    /// The user name.
    pub(crate) username: String,
    /// File holding the password (read at start-up, trailing newline removed).
    pub(crate) password_file: Option<PathBuf>,
    /// As for bearer tokens: the tenant of every request of this user.
    pub(crate) tenant: Option<String>,
}

/// `otlp:`
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOtlp {
    /// OTLP over gRPC.
    pub(crate) grpc: RawOtlpGrpc,
    /// OTLP over HTTP (`POST /v1/traces`, protobuf or JSON).
    pub(crate) http: RawOtlpHttp,
}

/// `otlp.grpc:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOtlpGrpc {
    /// IP address and port of the OTLP/gRPC receiver.
    pub(crate) listen_address: String,
    /// Largest accepted request message, after decompression (at most 1GiB).
    pub(crate) max_recv_msg_size: ByteSize,
    /// TLS for OTLP/gRPC.
    pub(crate) tls: RawTls,
    /// Credentials required on every export.
    pub(crate) auth: RawAuth,
}

impl Default for RawOtlpGrpc {
    fn default() -> Self {
        RawOtlpGrpc {
            listen_address: "127.0.0.1:4319".to_owned(),
            max_recv_msg_size: ByteSize::mib(16),
            tls: RawTls::default(),
            auth: RawAuth::default(),
        }
    }
}

/// `otlp.http:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOtlpHttp {
    /// IP address and port of the OTLP/HTTP receiver.
    pub(crate) listen_address: String,
    /// Largest accepted request body, after decompression (at most 1GiB).
    pub(crate) max_request_body_size: ByteSize,
    /// TLS for OTLP/HTTP.
    pub(crate) tls: RawTls,
    /// Credentials required on every export.
    pub(crate) auth: RawAuth,
}

impl Default for RawOtlpHttp {
    fn default() -> Self {
        RawOtlpHttp {
            listen_address: "127.0.0.1:4320".to_owned(),
            max_request_body_size: ByteSize::mib(16),
            tls: RawTls::default(),
            auth: RawAuth::default(),
        }
    }
}

/// `ingest:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawIngest {
    /// Bytes of requests being made durable at once. Beyond this, requests are refused
    /// with RESOURCE_EXHAUSTED (gRPC) or 429 (HTTP) so memory stays bounded. Must be at
    /// least the largest accepted request.
    pub(crate) max_inflight_bytes: ByteSize,
    /// The delay suggested to refused clients (gRPC RetryInfo, HTTP Retry-After).
    #[serde(with = "duration")]
    pub(crate) retry_after: Duration,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            max_inflight_bytes: ByteSize::mib(64),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// `wal:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawWal {
    /// Directory of the write-ahead log. Relative paths are relative to the working
    /// directory.
    pub(crate) path: PathBuf,
    /// When an append counts as durable: `always` (fsync before acknowledging; the safe
    /// default), `never` (leave write-back to the OS), or a duration such as `100ms`
    /// (fsync at most that often; a power failure can lose acknowledged spans from that
    /// window, a process crash cannot).
    pub(crate) fsync: RawFsync,
    /// A WAL segment is sealed when it grows past this size.
    pub(crate) segment_max_size: ByteSize,
}

impl Default for RawWal {
    fn default() -> Self {
        RawWal {
            path: PathBuf::from("./data/wal"),
            fsync: RawFsync::Always,
            segment_max_size: ByteSize::mib(128),
        }
    }
}

/// `head:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHead {
    /// At a cut, traces that received no spans for this long go into the block; busier
    /// traces stay in memory (rewritten into the new WAL segment) for the next cut.
    #[serde(with = "duration")]
    pub(crate) trace_idle: Duration,
    /// Cut a block when the live traces hold this many bytes. Ingest is refused
    /// (RESOURCE_EXHAUSTED / 429) while live traces plus blocks waiting for upload hold
    /// twice this, so a slow backend bounds memory instead of exhausting it.
    pub(crate) max_block_size: ByteSize,
    /// Cut a block when the oldest live trace is this old; that trace goes into the
    /// block even if it still receives spans.
    #[serde(with = "duration")]
    pub(crate) max_block_duration: Duration,
}

impl Default for RawHead {
    fn default() -> Self {
        RawHead {
            trace_idle: Duration::from_secs(10),
            max_block_size: ByteSize::mib(128),
            max_block_duration: Duration::from_secs(5 * 60),
        }
    }
}

/// `storage.backend:`
// Deserialized through a string: serde's derived enums also accept a variant index,
// which would let `backend: 1` mean s3.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub(crate) enum RawBackendKind {
    /// Blocks in a local directory (`storage.local`).
    Local,
    /// Blocks in an S3-compatible bucket (`storage.s3`).
    S3,
}

impl TryFrom<String> for RawBackendKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "local" => Ok(RawBackendKind::Local),
            "s3" => Ok(RawBackendKind::S3),
            _ => Err(expected_one_of(&["local", "s3"], &name)),
        }
    }
}

/// `storage:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStorage {
    /// Where blocks go: `local` or `s3`. Only the matching section below is used.
    pub(crate) backend: RawBackendKind,
    /// Settings for `backend: local`.
    pub(crate) local: RawLocalStorage,
    /// Settings for `backend: s3`.
    pub(crate) s3: RawS3Storage,
    /// How often the list of blocks in the backend is refreshed (picks up blocks written
    /// by other servers sharing the bucket).
    #[serde(with = "duration")]
    pub(crate) blocklist_poll: Duration,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            backend: RawBackendKind::Local,
            local: RawLocalStorage::default(),
            s3: RawS3Storage::default(),
            blocklist_poll: Duration::from_secs(30),
        }
    }
}

/// `cluster:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCluster {
    /// API addresses (`host:port`) of the other servers sharing the bucket. Trace-by-ID
    /// lookups and searches ask each of them for the traces they hold in memory (not yet
    /// in a block this server has listed). A name is re-resolved every few seconds and
    /// each of its addresses is a server, so one DNS name (e.g. a headless Service) can
    /// stand for all of them; this server's own address may be listed too.
    pub(crate) peers: Vec<String>,
    /// How long a peer may take to answer; a peer that does not is left out of the
    /// answer (logged and counted), which then holds what this server and the bucket
    /// have.
    #[serde(with = "duration")]
    pub(crate) peer_timeout: Duration,
    /// How peers' APIs are reached when they serve HTTPS (their `api.tls`).
    pub(crate) tls: RawPeerTls,
    /// The credential sent to peers whose API requires one (their `api.auth`).
    pub(crate) auth: RawPeerAuth,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            peers: Vec::new(),
            peer_timeout: Duration::from_secs(5),
            tls: RawPeerTls::default(),
            auth: RawPeerAuth::default(),
        }
    }
}

/// `cluster.tls:`. Peers are asked over HTTPS when `enabled` is true.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPeerTls {
    /// Ask peers over HTTPS, verifying each against the name it is listed by.
    pub(crate) enabled: bool,
    /// PEM CA certificates trusted for the peers' certificates, besides the system's.
    pub(crate) ca_file: String,
    /// PEM client certificate, for peers whose API requires one (`api.tls.client_ca_file`).
    pub(crate) cert_file: String,
    /// PEM private key of `cert_file`.
    pub(crate) key_file: String,
}

/// `cluster.auth:`: at most one of a bearer token or a user and password, from files.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPeerAuth {
    /// File holding the token sent as `Authorization: Bearer <token>`.
    pub(crate) bearer_token_file: Option<PathBuf>,
    /// User sent with Basic authentication, with `password_file`.
    pub(crate) username: String,
    /// File holding the password of `username`.
    pub(crate) password_file: Option<PathBuf>,
}

/// `storage.local:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLocalStorage {
    /// Directory holding the blocks. Relative paths are relative to the working
    /// directory.
    pub(crate) path: PathBuf,
}

impl Default for RawLocalStorage {
    fn default() -> Self {
        RawLocalStorage {
            path: PathBuf::from("./data/blocks"),
        }
    }
}

/// `storage.s3:`. Empty strings mean "not set".
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawS3Storage {
    /// Bucket name; required when `storage.backend` is `s3`.
    pub(crate) bucket: String,
    /// URL of an S3-compatible server, e.g. `http://127.0.0.1:9000`; empty means AWS.
    pub(crate) endpoint: String,
    /// Region of the bucket (S3-compatible servers usually accept any value).
    pub(crate) region: String,
    /// Key prefix for every object inside the bucket; empty for none.
    pub(crate) prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual hosts, needed by
    /// most S3-compatible servers.
    pub(crate) force_path_style: bool,
    /// Allow a plain `http://` endpoint.
    pub(crate) allow_http: bool,
    /// Static access key; when empty, credentials come from the standard AWS environment
    /// variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    pub(crate) access_key_id: String,
    /// Static secret key; set together with `access_key_id`.
    pub(crate) secret_access_key: String,
}

impl Default for RawS3Storage {
    fn default() -> Self {
        RawS3Storage {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            prefix: String::new(),
            force_path_style: true,
            allow_http: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
        }
    }
}

/// `query:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawQuery {
    /// Traces returned by a search that sends no `limit`.
    pub(crate) default_result_limit: u32,
    /// Largest `limit` a search may ask for; larger values are refused with 400.
    pub(crate) max_result_limit: u32,
    /// Spans listed per spanset when a search sends no `spss` (or `spss=0`).
    pub(crate) default_spans_per_span_set: u32,
    /// Largest `spss` a search may ask for; larger values are refused with 400.
    pub(crate) max_spans_per_span_set: u32,
    /// Longest `start`..`end` range of a search or tag query.
    #[serde(with = "duration")]
    pub(crate) max_search_duration: Duration,
    /// Longest `start`..`end` range of a TraceQL metrics query.
    #[serde(with = "duration")]
    pub(crate) max_metrics_duration: Duration,
    /// Series a metrics query may produce; beyond this the response is marked partial.
    pub(crate) max_metrics_series: u32,
    /// Exemplars a metrics query returns at most (and by default).
    pub(crate) max_exemplars: u32,
    /// Step of a metrics range query that sends none: `auto` (the range divided into
    /// about 240 intervals, rounded to a whole step as Tempo does) or a duration.
    pub(crate) metrics_default_step: RawStep,
    /// Searches and tag queries without `start`/`end` look at "recent" data: the live
    /// traces plus blocks written within this long.
    #[serde(with = "duration")]
    pub(crate) recent_window: Duration,
    /// Parts of one trace stored in different blocks (or in a block and the live
    /// traces) are merged before a query evaluates the trace. A block is consulted for
    /// a trace's other parts when its spans lie within this long of the part found.
    #[serde(with = "duration")]
    pub(crate) trace_merge_window: Duration,
}

impl Default for RawQuery {
    fn default() -> Self {
        RawQuery {
            default_result_limit: 20,
            max_result_limit: 262_144,
            default_spans_per_span_set: 3,
            max_spans_per_span_set: 100,
            max_search_duration: Duration::from_secs(168 * 3600),
            max_metrics_duration: Duration::from_secs(24 * 3600),
            max_metrics_series: 1000,
            max_exemplars: 100,
            metrics_default_step: RawStep::Auto,
            recent_window: Duration::from_secs(3600),
            trace_merge_window: Duration::from_secs(3600),
        }
    }
}

/// A duration as a map value (`retention.per_tenant`), where `#[serde(with)]` on the
/// field cannot reach.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct RawDuration(#[serde(with = "duration")] pub(crate) Duration);

/// `retention:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRetention {
    /// Blocks whose newest span ended longer ago than this are deleted (Tempo's
    /// compactor `block_retention`).
    #[serde(with = "duration")]
    pub(crate) block_retention: Duration,
    /// Tenant ID → retention for that tenant, overriding `block_retention`.
    pub(crate) per_tenant: BTreeMap<String, RawDuration>,
    /// How often the backend is swept for expired blocks (also once at start-up).
    #[serde(with = "duration")]
    pub(crate) interval: Duration,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            block_retention: Duration::from_secs(14 * 24 * 3600),
            per_tenant: BTreeMap::new(),
            interval: Duration::from_secs(5 * 60),
        }
    }
}

/// `compaction:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCompaction {
    /// Merge small blocks of a tenant into larger ones, and delete blocks past their
    /// retention. Servers sharing a bucket may all enable it: each tenant is compacted
    /// by one server at a time, the holder of its lease in the bucket.
    pub(crate) enabled: bool,
    /// Only blocks whose newest span ended in the same window of this length are merged
    /// (Tempo's `compaction_window`).
    #[serde(with = "duration")]
    pub(crate) window: Duration,
    /// Most blocks merged into one (like Tempo's `max_compaction_objects`, counted in
    /// blocks). Each input holds about one row group in memory while merging.
    pub(crate) max_input_blocks: u32,
    /// The inputs of one compaction hold at most this many bytes together, which bounds
    /// the output block; the output is assembled in memory before upload (Tempo's
    /// `max_block_bytes`).
    pub(crate) max_block_size: ByteSize,
    /// How often blocks are looked at for compaction and replaced blocks for deletion
    /// (Tempo's `compaction_cycle`).
    #[serde(with = "duration")]
    pub(crate) cycle: Duration,
    /// How long blocks replaced by a compacted block stay in the store (hidden from new
    /// queries) so queries already reading them can finish (Tempo's
    /// `compacted_block_retention`).
    #[serde(with = "duration")]
    pub(crate) compacted_block_retention: Duration,
    /// With an S3 bucket shared by several servers: how long a server holds a tenant's
    /// compaction lease without renewing it. A holder renews it every cycle once half
    /// has passed; when a holder dies, another server takes over after at most this
    /// long. At least twice `cycle`.
    #[serde(with = "duration")]
    pub(crate) lease_duration: Duration,
}

impl Default for RawCompaction {
    fn default() -> Self {
        RawCompaction {
            enabled: true,
            window: Duration::from_secs(3600),
            max_input_blocks: 8,
            max_block_size: ByteSize::mib(512),
            cycle: Duration::from_secs(30),
            compacted_block_retention: Duration::from_secs(3600),
            lease_duration: Duration::from_secs(120),
        }
    }
}

/// `limits:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    /// Bytes per second one tenant may send (OTLP request sizes), refilled continuously;
    /// `0` means unlimited. Requests over the limit are refused with RESOURCE_EXHAUSTED
    /// (gRPC) or 429 (HTTP) naming the limit (Tempo's `ingestion_rate_limit_bytes`).
    pub(crate) ingestion_rate: ByteSize,
    /// Bytes one tenant may send at once above the rate; `0` means the same as one
    /// second of `ingestion_rate` (Tempo's `ingestion_burst_size_bytes`).
    pub(crate) ingestion_burst: ByteSize,
    /// Spans with an attribute value (string or bytes, on the span, its events and
    /// links, or its resource) longer than this are refused individually and counted in
    /// the OTLP `partial_success` answer; `0` means unlimited.
    pub(crate) max_attribute_value_length: ByteSize,
    /// Traces one tenant may have live (received, not yet in a block). A request that
    /// would start more is refused as a whole with RESOURCE_EXHAUSTED / 429 naming the
    /// limit; spans of traces already live are always accepted. `0` means unlimited
    /// (Tempo's `max_traces_per_user`, which drops instead).
    pub(crate) max_live_traces: u32,
    /// Bytes one live trace may hold (Tempo's `max_bytes_per_trace`). Spans that would
    /// take their trace past it are refused individually and counted in the OTLP
    /// `partial_success` answer; the rest of the request is stored. `0` means unlimited.
    pub(crate) max_bytes_per_trace: ByteSize,
    /// Queries (trace by ID, search, tags, tag values, metrics) one tenant may run at once
    /// on this server; one more is refused with 429 naming the limit. `0` means unlimited.
    pub(crate) max_concurrent_queries: u32,
    /// Tenant ID → overrides of the keys above, and of `query.max_search_duration` and
    /// `query.max_result_limit`.
    pub(crate) per_tenant: BTreeMap<String, RawTenantLimits>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            ingestion_rate: ByteSize(0),
            ingestion_burst: ByteSize(0),
            max_attribute_value_length: ByteSize(0),
            max_live_traces: 0,
            max_bytes_per_trace: ByteSize(0),
            max_concurrent_queries: 0,
            per_tenant: BTreeMap::new(),
        }
    }
}

/// `limits.per_tenant.<tenant>:`; an absent key keeps the global value.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenantLimits {
    pub(crate) ingestion_rate: Option<ByteSize>,
    pub(crate) ingestion_burst: Option<ByteSize>,
    pub(crate) max_attribute_value_length: Option<ByteSize>,
    pub(crate) max_live_traces: Option<u32>,
    pub(crate) max_bytes_per_trace: Option<ByteSize>,
    pub(crate) max_concurrent_queries: Option<u32>,
    /// Overrides `query.max_search_duration` for the tenant.
    #[serde(default, with = "option_duration")]
    pub(crate) max_search_duration: Option<Duration>,
    /// Overrides `query.max_result_limit` for the tenant.
    pub(crate) max_result_limit: Option<u32>,
}

/// `metrics_generator:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMetricsGenerator {
    /// Derive service-graph and span metrics from ingested spans (Tempo's
    /// metrics-generator), exposed on the API's `/metrics` and optionally remote-written.
    pub(crate) enabled: bool,
    /// Which processors run: `service-graphs`, `span-metrics` (Tempo's names).
    pub(crate) processors: Vec<String>,
    /// Series one tenant may have at once, counted as Prometheus counts them (a
    /// histogram is one series per bucket plus `_sum` and `_count`). Spans that would
    /// create more are left out of the metrics and counted in
    /// `spoor_generator_series_limited_total` (Tempo's `max_active_series`).
    pub(crate) max_active_series: u32,
    /// A series not updated for this long is removed (Tempo's `stale_duration`).
    #[serde(with = "duration")]
    pub(crate) stale_after: Duration,
    /// Spans that ended longer ago than this when they arrive are left out of the
    /// metrics, so a backfill or a replayed queue does not show up as a burst of
    /// current traffic (Tempo's `metrics_ingestion_time_range_slack`); `0s` counts
    /// every span.
    #[serde(with = "duration")]
    pub(crate) ingestion_time_range_slack: Duration,
    /// Ingest requests waiting for the generator. When it is full, the spans are still
    /// stored and acknowledged but left out of the metrics, and counted in
    /// `spoor_generator_dropped_spans_total{reason="queue_full"}`: metrics never slow
    /// down ingest.
    pub(crate) queue_size: u32,
    /// Tenant ID → overrides of `enabled`, `processors` and `max_active_series`.
    pub(crate) per_tenant: BTreeMap<String, RawGeneratorOverrides>,
    /// The `service-graphs` processor.
    pub(crate) service_graphs: RawServiceGraphs,
    /// The `span-metrics` processor.
    pub(crate) span_metrics: RawSpanMetrics,
    /// Pushing the series to Prometheus-compatible receivers.
    pub(crate) remote_write: RawRemoteWrite,
}

impl Default for RawMetricsGenerator {
    fn default() -> Self {
        RawMetricsGenerator {
            enabled: true,
            processors: vec!["service-graphs".to_owned(), "span-metrics".to_owned()],
            max_active_series: 50_000,
            stale_after: Duration::from_secs(15 * 60),
            ingestion_time_range_slack: Duration::from_secs(30),
            queue_size: 1024,
            per_tenant: BTreeMap::new(),
            service_graphs: RawServiceGraphs::default(),
            span_metrics: RawSpanMetrics::default(),
            remote_write: RawRemoteWrite::default(),
        }
    }
}

/// `metrics_generator.per_tenant.<tenant>:`; an absent key keeps the global value.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGeneratorOverrides {
    pub(crate) enabled: Option<bool>,
    pub(crate) processors: Option<Vec<String>>,
    pub(crate) max_active_series: Option<u32>,
}

/// `metrics_generator.service_graphs:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServiceGraphs {
    /// How long a client or server span waits for its other half before the edge
    /// expires (as a virtual node where the span allows, else unpaired).
    #[serde(with = "duration")]
    pub(crate) wait: Duration,
    /// Edges waiting for their other half at most, per tenant; spans beyond are counted
    /// in `traces_service_graph_dropped_spans_total`.
    pub(crate) max_items: u32,
    /// Upper bounds (seconds) of the request duration histograms.
    pub(crate) histogram_buckets: Vec<f64>,
    /// Span or resource attributes added as labels (dots become underscores).
    pub(crate) dimensions: Vec<String>,
    /// Label each dimension twice, as `client_<dim>` and `server_<dim>`.
    pub(crate) enable_client_server_prefix: bool,
    /// Add `virtual_node="client"|"server"` to edges whose other side is a virtual node.
    pub(crate) enable_virtual_node_label: bool,
    /// Span attributes naming the server of a client span that has no server span
    /// (an uninstrumented or external service), in order of preference.
    pub(crate) peer_attributes: Vec<String>,
}

impl Default for RawServiceGraphs {
    fn default() -> Self {
        RawServiceGraphs {
            wait: Duration::from_secs(10),
            max_items: 10_000,
            histogram_buckets: exponential_buckets(0.1, 2.0, 8),
            dimensions: Vec::new(),
            enable_client_server_prefix: false,
            enable_virtual_node_label: false,
            peer_attributes: [
                "peer.service",
                "db.namespace",
                "db.name",
                "db.system",
                "db.system.name",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// `metrics_generator.span_metrics:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSpanMetrics {
    /// Upper bounds (seconds) of the latency histogram.
    pub(crate) histogram_buckets: Vec<f64>,
    /// Span or resource attributes added as labels (dots become underscores; a name
    /// that collides with an intrinsic label gets a `__` prefix).
    pub(crate) dimensions: Vec<String>,
    /// Which intrinsic labels are kept.
    pub(crate) intrinsic_dimensions: RawIntrinsicDimensions,
}

impl Default for RawSpanMetrics {
    fn default() -> Self {
        RawSpanMetrics {
            histogram_buckets: exponential_buckets(0.002, 2.0, 14),
            dimensions: Vec::new(),
            intrinsic_dimensions: RawIntrinsicDimensions::default(),
        }
    }
}

/// `metrics_generator.span_metrics.intrinsic_dimensions:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawIntrinsicDimensions {
    pub(crate) service: bool,
    pub(crate) span_name: bool,
    pub(crate) span_kind: bool,
    pub(crate) status_code: bool,
    pub(crate) status_message: bool,
}

impl Default for RawIntrinsicDimensions {
    fn default() -> Self {
        RawIntrinsicDimensions {
            service: true,
            span_name: true,
            span_kind: true,
            status_code: true,
            status_message: false,
        }
    }
}

/// `metrics_generator.remote_write:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRemoteWrite {
    /// Prometheus remote-write receivers (`http://prometheus:9090/api/v1/write`,
    /// Mimir's `/api/v1/push`, ...); every one receives every series.
    pub(crate) endpoints: Vec<RawRemoteWriteEndpoint>,
    /// How often the series are pushed (Tempo's `collection_interval`).
    #[serde(with = "duration")]
    pub(crate) interval: Duration,
    /// Timeout of one push request.
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    /// Labels added to every pushed series.
    pub(crate) external_labels: BTreeMap<String, String>,
    /// When not empty, the tenant ID is added to every pushed series as this label
    /// (Tempo's `inject_tenant_id_as`).
    pub(crate) inject_tenant_id_as: String,
}

impl Default for RawRemoteWrite {
    fn default() -> Self {
        RawRemoteWrite {
            endpoints: Vec::new(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            external_labels: BTreeMap::new(),
            inject_tenant_id_as: String::new(),
        }
    }
}

/// `metrics_generator.remote_write.endpoints[]:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRemoteWriteEndpoint {
    /// URL of the receiver.
    pub(crate) url: String,
    /// Extra request headers (e.g. `Authorization`).
    pub(crate) headers: BTreeMap<String, String>,
    /// Send the tenant ID as `X-Scope-OrgID` (Tempo's
    /// `remote_write_add_org_id_header`), so a multi-tenant receiver such as Mimir
    /// keeps tenants apart.
    pub(crate) send_tenant_header: bool,
}

impl Default for RawRemoteWriteEndpoint {
    fn default() -> Self {
        RawRemoteWriteEndpoint {
            url: String::new(),
            headers: BTreeMap::new(),
            send_tenant_header: true,
        }
    }
}

/// Prometheus' `ExponentialBuckets(start, factor, count)`.
fn exponential_buckets(start: f64, factor: f64, count: i32) -> Vec<f64> {
    (0..count).map(|i| start * factor.powi(i)).collect()
}

/// `shutdown:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawShutdown {
    /// Upper bound for the whole ordered drain after SIGTERM (receivers stop, queues
    /// drain, the WAL is flushed); work still pending then is abandoned.
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            timeout: Duration::from_secs(30),
        }
    }
}

/// `log.format:`
// Deserialized through a string, like `RawBackendKind`.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub(crate) enum RawLogFormat {
    /// journald when started by systemd with its output connected to the journal
    /// (JOURNAL_STREAM is set), text otherwise.
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// Structured entries sent to journald.
    Journald,
}

impl TryFrom<String> for RawLogFormat {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "auto" => Ok(RawLogFormat::Auto),
            "text" => Ok(RawLogFormat::Text),
            "json" => Ok(RawLogFormat::Json),
            "journald" => Ok(RawLogFormat::Journald),
            _ => Err(expected_one_of(
                &["auto", "text", "json", "journald"],
                &name,
            )),
        }
    }
}

/// `log:`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    /// Which logs are written, as a tracing env-filter: a level (`off`, `error`,
    /// `warn`, `info`, `debug`, `trace`) or directives such as `spoor=debug,info`.
    pub(crate) level: String,
    /// `auto`, `text`, `json` or `journald`.
    pub(crate) format: RawLogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".to_owned(),
            format: RawLogFormat::Auto,
        }
    }
}
