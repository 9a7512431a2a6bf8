//! spoor-collector's configuration, in the OpenTelemetry Collector's shape.
//!
//! `collector.yaml` has the sections `receivers`, `processors`, `exporters`, `extensions`
//! and `service` (`extensions`, `pipelines`, `telemetry`); components are named
//! `type[/name]` (`otlp/backup`). Loading ([`load_collector_config`]):
//!
//! 1. the YAML file, or [`DEFAULT_CONFIG_YAML`] when no file is given;
//! 2. `${env:VAR}` substitution in values ([`expand`]);
//! 3. `SPOOR_` environment variables on top (`SPOOR_EXPORTERS__OTLP__ENDPOINT` sets
//!    `exporters.otlp.endpoint`), as for spoor-server;
//! 4. per component: unknown keys (with suggestions), then typed deserialization, every
//!    problem reported with its key path;
//! 5. validation of values and of the pipeline graph ([`validate`]).
//!
//! All errors are collected and returned together. Component kinds are closed enums
//! ([`ReceiverConfig`], [`ProcessorConfig`], [`ExporterConfig`], [`ExtensionConfig`]): a
//! new component is a new variant plus a match arm in the loader. Every key is documented
//! in docs/collector.md.

mod expand;
mod load;
mod processors;
mod raw;
mod tail_sampling;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use load::{
    load_collector_config, load_collector_config_from_str, load_collector_config_with_env,
    DEFAULT_CONFIG_YAML,
};
pub use processors::{
    ActionTarget, AttributeAction, AttributeValue, AttributesConfig, ConfigRegex, ConvertedType,
    MatchAttribute, MatchProperties, MatchString, ProbabilisticSamplerConfig, RedactionConfig,
    RedactionSummary, ResourceConfig,
};
pub use tail_sampling::{
    CompositePolicy, PolicyRule, SamplingPolicy, StringValues, TailSamplingConfig,
};

use crate::auth::{AuthConfig, ClientAuth};
use crate::config::{LogConfig, ServerTlsConfig};

/// A component's ID: its type and an optional name, written `type` or `type/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    kind: String,
    name: Option<String>,
}

impl ComponentId {
    /// Parses `type` or `type/name`. Types are lowercase letters, digits and `_`, starting
    /// with a letter; names are anything non-empty.
    ///
    /// # Errors
    /// A message saying what is wrong with the ID.
    pub fn parse(text: &str) -> Result<ComponentId, String> {
        let text = text.trim();
        let (kind, name) = match text.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (text, None),
        };
        let valid_kind = kind
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic())
            && kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_kind {
            return Err(format!(
                "invalid component ID {text:?}: expected type or type/name, where type starts with a letter"
            ));
        }
        if name.is_some_and(|name| name.trim().is_empty()) {
            return Err(format!(
                "invalid component ID {text:?}: the name after '/' must not be empty"
            ));
        }
        Ok(ComponentId {
            kind: kind.to_owned(),
            name: name.map(str::to_owned),
        })
    }

    /// The component type, e.g. `otlp` in `otlp/backup`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The instance name, e.g. `backup` in `otlp/backup`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The ID as a file-name-safe string (`otlp/backup` → `otlp_backup`), for directories
    /// that belong to one component.
    pub fn file_name(&self) -> String {
        file_name_safe(&self.to_string())
    }
}

/// `text` with every character other than ASCII letters, digits, `-` and `.` replaced by
/// `_`: a directory name that cannot leave its parent.
fn file_name_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

/// Everything spoor-collector needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorConfig {
    /// `receivers`: every defined receiver (only those in a pipeline are started).
    pub receivers: BTreeMap<ComponentId, ReceiverConfig>,
    /// `processors`: every defined processor; each pipeline gets its own instances.
    pub processors: BTreeMap<ComponentId, ProcessorConfig>,
    /// `exporters`: every defined exporter (only those in a pipeline are started).
    pub exporters: BTreeMap<ComponentId, ExporterConfig>,
    /// The extensions listed in `service.extensions`, in that order.
    pub extensions: Vec<(ComponentId, ExtensionConfig)>,
    /// `service.pipelines`, all of type `traces`.
    pub pipelines: Vec<PipelineConfig>,
    /// `service.telemetry`.
    pub telemetry: TelemetryConfig,
    /// Non-fatal findings (unset environment variables, ignored deprecated keys), to log
    /// once logging is up.
    pub warnings: Vec<String>,
}

/// A receiver, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverConfig {
    /// `otlp`: OTLP over gRPC and/or HTTP.
    Otlp(OtlpReceiverConfig),
    /// `zipkin`: Zipkin v2 JSON over HTTP.
    Zipkin(ZipkinReceiverConfig),
    /// `jaeger`: Jaeger gRPC, Thrift over HTTP and the agent's UDP Thrift ports.
    Jaeger(JaegerReceiverConfig),
}

/// `receivers.jaeger`: only the protocols listed are served.
#[derive(Debug, Clone, PartialEq)]
pub struct JaegerReceiverConfig {
    /// `protocols.grpc` (`jaeger.api_v2.CollectorService`).
    pub grpc: Option<GrpcReceiverConfig>,
    /// `protocols.thrift_http` (`POST /api/traces`).
    pub thrift_http: Option<HttpReceiverConfig>,
    /// `protocols.thrift_compact` (UDP, the agent's compact port).
    pub thrift_compact: Option<JaegerUdpConfig>,
    /// `protocols.thrift_binary` (UDP, the agent's binary port).
    pub thrift_binary: Option<JaegerUdpConfig>,
}

/// `receivers.jaeger.protocols.thrift_compact` / `thrift_binary`.
#[derive(Debug, Clone, PartialEq)]
pub struct JaegerUdpConfig {
    /// `endpoint`.
    pub endpoint: SocketAddr,
    /// `queue_size`: packets waiting to be decoded.
    pub queue_size: usize,
    /// `max_packet_size`, in bytes.
    pub max_packet_size: usize,
    /// `workers`: tasks decoding packets.
    pub workers: usize,
    /// `socket_buffer_size` (`SO_RCVBUF`), 0 for the system default.
    pub socket_buffer_size: usize,
}

/// `receivers.zipkin`.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipkinReceiverConfig {
    /// `endpoint`.
    pub endpoint: SocketAddr,
    /// `parse_string_tags`.
    pub parse_string_tags: bool,
    /// Request body limit (the OTLP/HTTP default; the key has no Zipkin equivalent).
    pub max_request_body_bytes: usize,
    /// `tls`; `None` for plain HTTP.
    pub tls: Option<ServerTlsConfig>,
    /// `auth.authenticator`'s accepted credentials; empty when the receiver is open.
    pub auth: AuthConfig,
}

/// `receivers.otlp`.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpReceiverConfig {
    /// `protocols.grpc`, when present.
    pub grpc: Option<GrpcReceiverConfig>,
    /// `protocols.http`, when present.
    pub http: Option<HttpReceiverConfig>,
}

/// `receivers.otlp.protocols.grpc`.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcReceiverConfig {
    /// `endpoint`.
    pub endpoint: SocketAddr,
    /// `max_recv_msg_size_mib`, in bytes.
    pub max_recv_msg_bytes: usize,
    /// `tls`; `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// `auth.authenticator`'s accepted credentials; empty when the receiver is open.
    pub auth: AuthConfig,
}

/// `receivers.otlp.protocols.http`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReceiverConfig {
    /// `endpoint`.
    pub endpoint: SocketAddr,
    /// `max_request_body_size`.
    pub max_request_body_bytes: usize,
    /// `tls`; `None` for plain HTTP.
    pub tls: Option<ServerTlsConfig>,
    /// `auth.authenticator`'s accepted credentials; empty when the receiver is open.
    pub auth: AuthConfig,
}

/// A processor, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {
    /// `batch`.
    Batch(BatchConfig),
    /// `memory_limiter`.
    MemoryLimiter(MemoryLimiterConfig),
    /// `attributes`.
    Attributes(AttributesConfig),
    /// `resource`.
    Resource(ResourceConfig),
    /// `redaction`.
    Redaction(RedactionConfig),
    /// `probabilistic_sampler`.
    ProbabilisticSampler(ProbabilisticSamplerConfig),
    /// `tail_sampling`.
    TailSampling(TailSamplingConfig),
}

/// `processors.batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// `send_batch_size`: a batch is sent once it holds at least this many spans; `None`
    /// (written 0) means only the timeout sends.
    pub send_batch_size: Option<usize>,
    /// `send_batch_max_size`: larger batches are split; `None` (written 0) means no limit.
    pub send_batch_max_size: Option<usize>,
    /// `timeout`: the longest a span waits in the batch; zero sends immediately.
    pub timeout: Duration,
    /// `metadata_cardinality_limit`: the most tenants batched at once.
    pub max_tenants: usize,
}

/// `processors.memory_limiter`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryLimiterConfig {
    /// `check_interval`: how often the process's memory is measured.
    pub check_interval: Duration,
    /// The hard limit and the spike allowance below it.
    pub limit: MemoryLimit,
}

/// How the memory limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// `limit_mib` / `spike_limit_mib`, in bytes.
    Absolute {
        /// Hard limit.
        limit_bytes: u64,
        /// Headroom below the hard limit; data is refused above `limit - spike`.
        spike_bytes: u64,
    },
    /// `limit_percentage` / `spike_limit_percentage` of the host's (or cgroup's) memory.
    Percentage {
        /// Hard limit, percent.
        limit_percent: u32,
        /// Headroom, percent.
        spike_percent: u32,
    },
}

/// An exporter, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum ExporterConfig {
    /// `otlp`: OTLP over gRPC.
    Otlp(OtlpExporterConfig),
    /// `otlphttp`: OTLP over HTTP (protobuf).
    OtlpHttp(OtlpHttpExporterConfig),
    /// `debug`: spans to the collector's own log.
    Debug(DebugExporterConfig),
    /// `loadbalancing`: each trace to one of several OTLP/gRPC backends.
    LoadBalancing(LoadBalancingExporterConfig),
}

/// `exporters.loadbalancing`: spans routed by a consistent hash of their trace ID (or
/// service name) to one backend each; one `otlp` exporter, with its own queue and
/// retries, per backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancingExporterConfig {
    /// `routing_key`.
    pub routing_key: RoutingKey,
    /// `resolver.static.hostnames`, sorted (the ring does not depend on their order),
    /// each with the `protocol.otlp` settings; empty with `dns`.
    pub backends: Vec<LoadBalancingBackend>,
    /// `resolver.dns`: the backends are what a hostname resolves to, found at run time.
    pub dns: Option<DnsResolverConfig>,
    /// `failover` (spoor-specific), when enabled; otherwise a failing backend keeps its
    /// share, as in the OpenTelemetry Collector.
    pub failover: Option<FailoverConfig>,
}

/// `exporters.loadbalancing.resolver.dns`: every A/AAAA address of `hostname` is a
/// backend `ip:port`, resolved again every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsResolverConfig {
    /// `hostname`: resolved with the system resolver, so /etc/hosts counts.
    pub hostname: String,
    /// `port` (4317 by default): every backend's port.
    pub port: u16,
    /// `interval` (5s by default) between resolutions.
    pub interval: Duration,
    /// `timeout` (1s by default) of one resolution.
    pub timeout: Duration,
    /// `protocol.otlp` for every backend, `endpoint` empty until
    /// [`LoadBalancingBackend::for_address`] fills it in.
    pub backend: OtlpExporterConfig,
}

/// `exporters.loadbalancing.failover`: while a backend is down, its share goes to the
/// next backends on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    /// `unhealthy_after`: a backend whose every attempt failed for this long is down.
    pub unhealthy_after: Duration,
    /// `probe_interval`: how often a backend that is down is probed (an empty export).
    pub probe_interval: Duration,
}

/// `exporters.loadbalancing.routing_key`: what decides a span's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingKey {
    /// `traceID` (the default): every span of a trace goes to the same backend.
    TraceId,
    /// `service`: every span of a service (resource attribute `service.name`) goes to
    /// the same backend.
    Service,
}

/// One backend of a `loadbalancing` exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancingBackend {
    /// The hostname as written in `resolver.static.hostnames`: what places the backend
    /// on the hash ring, as in the OpenTelemetry Collector.
    pub hostname: String,
    /// `protocol.otlp` with `endpoint` set to the hostname (port 4317 when it has none)
    /// and, for a persistent queue, a directory of the backend's own.
    pub exporter: OtlpExporterConfig,
}

impl LoadBalancingBackend {
    /// The backend at `address` (`host:port`) with the settings of `template`: plaintext
    /// when `template` has no TLS (`tls.insecure`), a persistent queue in a directory of
    /// its own under the template's.
    pub fn for_address(template: &OtlpExporterConfig, address: &str) -> LoadBalancingBackend {
        let scheme = if template.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut exporter = OtlpExporterConfig {
            endpoint: format!("{scheme}://{address}"),
            ..template.clone()
        };
        if let Some(persistent) = &mut exporter.queue.persistent {
            persistent.directory = persistent.directory.join(file_name_safe(address));
        }
        LoadBalancingBackend {
            hostname: address.to_owned(),
            exporter,
        }
    }
}

/// `exporters.otlp`.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpExporterConfig {
    /// The URI the channel connects to, with its scheme (`http` when `tls.insecure`).
    pub endpoint: String,
    /// TLS settings; `None` for plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// `compression`.
    pub compression: Compression,
    /// `headers`, sent as gRPC metadata with every request.
    pub headers: Vec<(String, String)>,
    /// `auth.authenticator`'s credential, sent with every request.
    pub auth: Option<ClientAuth>,
    /// `timeout`: per attempt.
    pub timeout: Duration,
    /// `retry_on_failure`.
    pub retry: RetryConfig,
    /// `sending_queue`.
    pub queue: QueueConfig,
}

/// `exporters.otlphttp`.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpHttpExporterConfig {
    /// The full traces URL (`endpoint` + `/v1/traces`, or `traces_endpoint`).
    pub traces_url: String,
    /// Extra trust roots and client certificate for `https://` URLs.
    pub tls: ClientTlsConfig,
    /// `compression`.
    pub compression: Compression,
    /// `headers`.
    pub headers: Vec<(String, String)>,
    /// `auth.authenticator`'s credential, sent with every request.
    pub auth: Option<ClientAuth>,
    /// `timeout`: per attempt.
    pub timeout: Duration,
    /// `retry_on_failure`.
    pub retry: RetryConfig,
    /// `sending_queue`.
    pub queue: QueueConfig,
}

/// Client TLS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientTlsConfig {
    /// `ca_file`: extra trusted roots (the system's roots are always trusted).
    pub ca_file: Option<PathBuf>,
    /// `cert_file`: client certificate, set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// `key_file`.
    pub key_file: Option<PathBuf>,
    /// `server_name_override`.
    pub server_name: Option<String>,
    /// `insecure_skip_verify`: the server's certificate is not verified at all (chain,
    /// expiry, name); a warning naming the exporter is logged at start-up.
    pub insecure_skip_verify: bool,
}

/// Request compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `none` (or empty).
    None,
    /// `gzip`, the default.
    Gzip,
    /// `zstd`.
    Zstd,
}

/// `retry_on_failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// `enabled`.
    pub enabled: bool,
    /// `initial_interval`.
    pub initial_interval: Duration,
    /// `randomization_factor`: each wait is randomized by ± this fraction.
    pub randomization_factor: f64,
    /// `multiplier`.
    pub multiplier: f64,
    /// `max_interval`.
    pub max_interval: Duration,
    /// `max_elapsed_time`; `None` (written 0) retries forever.
    pub max_elapsed_time: Option<Duration>,
}

/// `sending_queue`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// `enabled`: when false, the pipeline waits for each export (one in flight per
    /// consumer) instead of queueing.
    pub enabled: bool,
    /// `num_consumers`: concurrent exports.
    pub num_consumers: usize,
    /// `queue_size`, in units of `sizer`.
    pub queue_size: u64,
    /// `sizer`.
    pub sizer: QueueSizer,
    /// `block_on_overflow`: wait for room instead of refusing when full.
    pub block_on_overflow: bool,
    /// `wait_for_result`: acknowledge receivers only once exported.
    pub wait_for_result: bool,
    /// Persistent storage, from `storage: file_storage…` or `persistent:`.
    pub persistent: Option<PersistentQueueConfig>,
}

/// What `queue_size` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueSizer {
    /// Batches.
    Requests,
    /// Spans.
    Items,
    /// Encoded bytes.
    Bytes,
}

/// A persistent sending queue.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistentQueueConfig {
    /// This exporter's own directory (the configured directory plus the exporter ID).
    pub directory: PathBuf,
    /// Bytes on disk, beyond which new data is refused.
    pub max_bytes: u64,
    /// fsync before acknowledging (safe by default).
    pub fsync: bool,
}

/// `exporters.debug`.
#[derive(Debug, Clone, PartialEq)]
pub struct DebugExporterConfig {
    /// `verbosity`.
    pub verbosity: Verbosity,
    /// `sampling_initial`: batches logged per second before sampling starts.
    pub sampling_initial: u32,
    /// `sampling_thereafter`: then one batch in this many.
    pub sampling_thereafter: u32,
}

/// `exporters.debug.verbosity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// One line per batch with counts.
    Basic,
    /// One line per span.
    Normal,
    /// Every field of every span.
    Detailed,
}

/// An extension, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionConfig {
    /// `health_check`.
    HealthCheck(HealthCheckConfig),
    /// `file_storage`: storage for persistent sending queues.
    FileStorage(FileStorageConfig),
    /// `bearertokenauth` or `basicauth`: credentials for receivers and exporters.
    Authenticator(AuthenticatorConfig),
}

/// `extensions.bearertokenauth` / `extensions.basicauth`, secrets already read from their
/// files.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatorConfig {
    /// What a receiver using it accepts (`None`: a `basicauth` with only `client_auth`).
    pub server: Option<AuthConfig>,
    /// What an exporter using it sends (`None`: a `basicauth` with only `htpasswd`).
    pub client: Option<ClientAuth>,
}

/// `extensions.health_check`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// `endpoint`.
    pub endpoint: SocketAddr,
    /// `path`.
    pub path: String,
    /// `tls`; `None` for plain HTTP.
    pub tls: Option<ServerTlsConfig>,
}

/// `extensions.file_storage`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStorageConfig {
    /// `directory`.
    pub directory: PathBuf,
    /// `fsync`.
    pub fsync: bool,
    /// `max_size`: bytes on disk per exporter queue.
    pub max_bytes: u64,
}

/// `service.pipelines.<id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// `traces` or `traces/name`.
    pub id: ComponentId,
    /// Receivers feeding the pipeline.
    pub receivers: Vec<ComponentId>,
    /// Processors, in order.
    pub processors: Vec<ComponentId>,
    /// Exporters; each gets every batch.
    pub exporters: Vec<ComponentId>,
}

/// `service.telemetry`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `logs`: the collector's own logs.
    pub logs: LogConfig,
    /// Where `/metrics` is served; `None` when `metrics.level` is `none`.
    pub metrics_address: Option<SocketAddr>,
    /// `metrics.tls`; `None` for plain HTTP.
    pub metrics_tls: Option<ServerTlsConfig>,
}
