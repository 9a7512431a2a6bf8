//! Raw config → validated [`ServerConfig`]: range checks, address parsing and cross-field
//! rules. Every rule reports into [`Problems`] and carries on, so one run finds them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

use super::error::{ConfigError, ConfigErrors, ValueOrigin};
use super::raw::{
    RawAuth, RawBackendKind, RawCluster, RawCompaction, RawLimits, RawLog, RawLogFormat,
    RawMetricsGenerator, RawPeerAuth, RawPeerTls, RawQuery, RawRemoteWrite, RawRetention,
    RawS3Storage, RawServerConfig, RawStorage, RawTls,
};
use super::server::*;
use super::values::{expected_one_of, ByteSize, RawFsync, RawStep};
use crate::auth::{AuthConfig, ClientAuth, Credential, Secret};
use crate::tenant::TenantId;

/// A single request is buffered whole in memory, so larger limits are almost certainly a
/// typo and would let a few clients exhaust the host.
const MAX_REQUEST_SIZE: ByteSize = ByteSize::gib(1);

/// Collects config errors, attaching to each the layer that set the offending key.
pub(crate) struct Problems<'a> {
    errors: Vec<ConfigError>,
    origin_of: &'a dyn Fn(&str) -> Option<ValueOrigin>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(origin_of: &'a dyn Fn(&str) -> Option<ValueOrigin>) -> Self {
        Problems {
            errors: Vec::new(),
            origin_of,
        }
    }

    pub(crate) fn origin_of(&self, key: &str) -> Option<ValueOrigin> {
        (self.origin_of)(key)
    }

    pub(crate) fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    pub(crate) fn invalid(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin_of(key);
        self.errors.push(ConfigError::InvalidValue {
            key: key.to_owned(),
            message: message.into(),
            origin,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(value)` only when nothing was reported.
    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors::new(self.errors))
        }
    }
}

/// Checks every rule and builds the validated config. The returned config is only
/// meaningful when `problems` stayed empty: fields that failed hold placeholders.
pub(crate) fn validate(raw: RawServerConfig, problems: &mut Problems<'_>) -> ServerConfig {
    let api_address = listen_address(problems, "api.listen_address", &raw.api.listen_address);
    let grpc_address = listen_address(
        problems,
        "otlp.grpc.listen_address",
        &raw.otlp.grpc.listen_address,
    );
    let http_address = listen_address(
        problems,
        "otlp.http.listen_address",
        &raw.otlp.http.listen_address,
    );
    check_distinct_listeners(
        problems,
        &[
            ("api.listen_address", api_address),
            ("otlp.grpc.listen_address", grpc_address),
            ("otlp.http.listen_address", http_address),
        ],
    );
    let tls = |problems: &mut Problems<'_>, key: &str, raw: &RawTls| {
        super::tls::server_tls(
            problems,
            key,
            [&raw.cert_file, &raw.key_file, &raw.client_ca_file],
            raw.reload_interval,
            false,
        )
    };
    let otlp = OtlpReceiverConfig {
        grpc: OtlpGrpcConfig {
            listen_address: grpc_address.unwrap_or(PLACEHOLDER_ADDRESS),
            max_recv_msg_bytes: request_size(
                problems,
                "otlp.grpc.max_recv_msg_size",
                raw.otlp.grpc.max_recv_msg_size,
            ),
            tls: tls(problems, "otlp.grpc.tls", &raw.otlp.grpc.tls),
            auth: auth(problems, "otlp.grpc.auth", &raw.otlp.grpc.auth),
        },
        http: OtlpHttpConfig {
            listen_address: http_address.unwrap_or(PLACEHOLDER_ADDRESS),
            max_request_body_bytes: request_size(
                problems,
                "otlp.http.max_request_body_size",
                raw.otlp.http.max_request_body_size,
            ),
            tls: tls(problems, "otlp.http.tls", &raw.otlp.http.tls),
            auth: auth(problems, "otlp.http.auth", &raw.otlp.http.auth),
        },
    };
    let api_tls = tls(problems, "api.tls", &raw.api.tls);

    let max_inflight_bytes = positive_size(
        problems,
        "ingest.max_inflight_bytes",
        raw.ingest.max_inflight_bytes,
    );
    let largest_request = raw
        .otlp
        .grpc
        .max_recv_msg_size
        .max(raw.otlp.http.max_request_body_size);
    if max_inflight_bytes > 0 && raw.ingest.max_inflight_bytes < largest_request {
        // Admission counts a request's bytes before accepting it, so a request larger
        // than the whole budget would be refused forever and its client would retry
        // endlessly.
        problems.invalid(
            "ingest.max_inflight_bytes",
            format!(
                "{} is smaller than the largest accepted request ({largest_request}, from \
                 otlp.grpc.max_recv_msg_size / otlp.http.max_request_body_size)",
                raw.ingest.max_inflight_bytes
            ),
        );
    }
    let retry_after = positive_duration(problems, "ingest.retry_after", raw.ingest.retry_after);

    let fsync = match raw.wal.fsync {
        RawFsync::Always => FsyncPolicy::Always,
        RawFsync::Never => FsyncPolicy::Never,
        RawFsync::Interval(interval) if interval.is_zero() => {
            problems.invalid(
                "wal.fsync",
                "interval must be greater than 0 (use \"always\" to fsync before every \
                 acknowledgement)",
            );
            FsyncPolicy::Always
        }
        RawFsync::Interval(interval) => FsyncPolicy::Interval(interval),
    };

    ServerConfig {
        api: ApiConfig {
            listen_address: api_address.unwrap_or(PLACEHOLDER_ADDRESS),
            tls: api_tls,
            auth: auth(problems, "api.auth", &raw.api.auth),
        },
        otlp,
        ingest: IngestConfig {
            max_inflight_bytes,
            retry_after,
        },
        wal: WalConfig {
            dir: non_empty_path(problems, "wal.path", &raw.wal.path),
            fsync,
            segment_max_bytes: positive_size(
                problems,
                "wal.segment_max_size",
                raw.wal.segment_max_size,
            ),
        },
        head: HeadConfig {
            trace_idle: positive_duration(problems, "head.trace_idle", raw.head.trace_idle),
            max_block_bytes: positive_size(
                problems,
                "head.max_block_size",
                raw.head.max_block_size,
            ),
            max_block_duration: positive_duration(
                problems,
                "head.max_block_duration",
                raw.head.max_block_duration,
            ),
        },
        storage: validate_storage(&raw.storage, problems),
        cluster: validate_cluster(&raw.cluster, problems),
        query: validate_query(&raw.query, problems),
        retention: validate_retention(&raw.retention, problems),
        compaction: validate_compaction(&raw.compaction, problems),
        limits: validate_limits(&raw.limits, problems),
        metrics_generator: validate_generator(&raw.metrics_generator, problems),
        shutdown: ShutdownConfig {
            timeout: positive_duration(problems, "shutdown.timeout", raw.shutdown.timeout),
        },
        log: validate_log(&raw.log, problems),
    }
}

/// Stands in for an address that failed to parse; never leaves this module because the
/// error that caused it makes loading fail.
const PLACEHOLDER_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

fn listen_address(problems: &mut Problems<'_>, key: &str, text: &str) -> Option<SocketAddr> {
    match text.trim().parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            // SocketAddr does not resolve names; say so, since `localhost:3200` is the
            // most likely thing to be written here.
            problems.invalid(
                key,
                format!(
                    "expected an IP address and port like 127.0.0.1:3200 or [::1]:3200 \
                     (host names are not resolved), got {text:?}"
                ),
            );
            None
        }
    }
}

/// Reports listeners that could not both bind: same port (other than 0, which asks the
/// OS for a free port) on the same IP, or on a wildcard IP that covers the other one.
fn check_distinct_listeners(problems: &mut Problems<'_>, listeners: &[(&str, Option<SocketAddr>)]) {
    for (index, &(key, address)) in listeners.iter().enumerate() {
        let Some(address) = address else { continue };
        let clash = listeners[..index].iter().find(|(_, earlier)| {
            earlier.is_some_and(|earlier| addresses_overlap(earlier, address))
        });
        if let Some((earlier_key, Some(earlier))) = clash {
            problems.invalid(
                key,
                format!("{address} conflicts with {earlier_key} ({earlier}): two listeners cannot share a port"),
            );
        }
    }
}

/// Whether two listen addresses would clash (same port, and one covers the other).
/// Port 0 never clashes: tests bind every listener to an ephemeral port.
pub(crate) fn addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    // An IPv6 wildcard listens on IPv4 too (dual-stack); an IPv4 wildcard only covers
    // IPv4 addresses.
    let covers = |wildcard: SocketAddr, other: SocketAddr| {
        wildcard.ip().is_unspecified() && (wildcard.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

fn positive_size(problems: &mut Problems<'_>, key: &str, size: ByteSize) -> u64 {
    if size.bytes() == 0 {
        problems.invalid(key, "must be greater than 0");
    }
    size.bytes()
}

fn request_size(problems: &mut Problems<'_>, key: &str, size: ByteSize) -> usize {
    let bytes = positive_size(problems, key, size);
    if size > MAX_REQUEST_SIZE {
        problems.invalid(
            key,
            format!("{size} is larger than the maximum of {MAX_REQUEST_SIZE}"),
        );
        return 0;
    }
    // At most 1GiB here, which fits usize on every supported target.
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

fn positive_duration(problems: &mut Problems<'_>, key: &str, duration: Duration) -> Duration {
    if duration.is_zero() {
        problems.invalid(key, "must be greater than 0");
    }
    duration
}

fn non_empty_path(problems: &mut Problems<'_>, key: &str, path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() {
        problems.invalid(key, "must not be empty");
    }
    path.to_owned()
}

fn validate_cluster(raw: &RawCluster, problems: &mut Problems<'_>) -> ClusterConfig {
    for (i, peer) in raw.peers.iter().enumerate() {
        let port = peer
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(port))) if !host.is_empty() && port > 0) {
            problems.invalid(
                &format!("cluster.peers[{i}]"),
                format!("expected host:port of a spoor-server API, got {peer:?}"),
            );
        }
    }
    ClusterConfig {
        peers: raw
            .peers
            .iter()
            .map(|peer| peer.trim().to_owned())
            .collect(),
        peer_timeout: positive_duration(problems, "cluster.peer_timeout", raw.peer_timeout),
        tls: peer_tls(problems, &raw.tls),
        auth: peer_auth(problems, &raw.auth),
    }
}

fn peer_tls(problems: &mut Problems<'_>, raw: &RawPeerTls) -> Option<PeerTlsConfig> {
    let path = |text: &str| (!text.is_empty()).then(|| PathBuf::from(text));
    let (ca_file, cert_file, key_file) = (
        path(&raw.ca_file),
        path(&raw.cert_file),
        path(&raw.key_file),
    );
    if !raw.enabled {
        if ca_file.is_some() || cert_file.is_some() || key_file.is_some() {
            problems.invalid("cluster.tls.enabled", "must be true when TLS files are set");
        }
        return None;
    }
    for (key, file) in [
        ("cluster.tls.ca_file", &ca_file),
        ("cluster.tls.cert_file", &cert_file),
        ("cluster.tls.key_file", &key_file),
    ] {
        if let Some(file) = file {
            if let Err(error) = std::fs::metadata(file) {
                problems.invalid(key, format!("{}: {error}", file.display()));
            }
        }
    }
    let client_identity = match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            problems.invalid(
                "cluster.tls.key_file",
                "is required with cluster.tls.cert_file",
            );
            None
        }
        (None, Some(_)) => {
            problems.invalid(
                "cluster.tls.cert_file",
                "is required with cluster.tls.key_file",
            );
            None
        }
    };
    Some(PeerTlsConfig {
        ca_file,
        client_identity,
    })
}

fn peer_auth(problems: &mut Problems<'_>, raw: &RawPeerAuth) -> Option<ClientAuth> {
    match (
        &raw.bearer_token_file,
        raw.username.is_empty(),
        &raw.password_file,
    ) {
        (None, true, None) => None,
        (Some(token_file), true, None) => {
            secret_file(problems, "cluster.auth.bearer_token_file", Some(token_file)).map(|token| {
                ClientAuth::Bearer {
                    scheme: "Bearer".to_owned(),
                    token,
                }
            })
        }
        (None, false, password_file) => secret_file(
            problems,
            "cluster.auth.password_file",
            password_file.as_deref(),
        )
        .map(|password| ClientAuth::Basic {
            username: raw.username.clone(),
            password,
        }),
        (None, true, Some(_)) => {
            problems.invalid(
                "cluster.auth.username",
                "is required with cluster.auth.password_file",
            );
            None
        }
        (Some(_), _, _) => {
            problems.invalid(
                "cluster.auth",
                "set either bearer_token_file or username and password_file, not both",
            );
            None
        }
    }
}

fn validate_storage(raw: &RawStorage, problems: &mut Problems<'_>) -> StorageConfig {
    let backend = match raw.backend {
        RawBackendKind::Local => BackendConfig::Local {
            path: non_empty_path(problems, "storage.local.path", &raw.local.path),
        },
        RawBackendKind::S3 => BackendConfig::S3(validate_s3(&raw.s3, problems)),
    };
    StorageConfig {
        backend,
        blocklist_poll: positive_duration(problems, "storage.blocklist_poll", raw.blocklist_poll),
    }
}

fn validate_s3(raw: &RawS3Storage, problems: &mut Problems<'_>) -> S3Config {
    const REQUIRED: &str = "required when storage.backend is s3";
    if raw.bucket.trim().is_empty() {
        problems.invalid("storage.s3.bucket", REQUIRED);
    }
    if raw.region.trim().is_empty() {
        problems.invalid("storage.s3.region", REQUIRED);
    }
    let endpoint = non_empty(&raw.endpoint);
    if let Some(endpoint) = &endpoint {
        validate_endpoint(problems, endpoint, raw.allow_http);
    }
    let access_key_id = non_empty(&raw.access_key_id);
    let secret_access_key = non_empty(&raw.secret_access_key);
    // One static key without the other would silently fall back to environment
    // credentials for the missing half, which is never what was meant.
    match (&access_key_id, &secret_access_key) {
        (Some(_), None) => problems.invalid(
            "storage.s3.secret_access_key",
            "required when storage.s3.access_key_id is set",
        ),
        (None, Some(_)) => problems.invalid(
            "storage.s3.access_key_id",
            "required when storage.s3.secret_access_key is set",
        ),
        _ => {}
    }
    S3Config {
        bucket: raw.bucket.trim().to_owned(),
        endpoint,
        region: raw.region.trim().to_owned(),
        prefix: raw.prefix.clone(),
        force_path_style: raw.force_path_style,
        allow_http: raw.allow_http,
        access_key_id,
        secret_access_key,
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn validate_endpoint(problems: &mut Problems<'_>, endpoint: &str, allow_http: bool) {
    const KEY: &str = "storage.s3.endpoint";
    if !is_http_url(endpoint) {
        problems.invalid(
            KEY,
            format!(
                "expected a URL like http://127.0.0.1:9000 or https://s3.example.com, got {endpoint:?}"
            ),
        );
        return;
    }
    if endpoint.starts_with("http://") && !allow_http {
        problems.invalid(
            KEY,
            "a plain http:// endpoint needs storage.s3.allow_http: true",
        );
    }
}

fn positive(problems: &mut Problems<'_>, key: &str, value: u32) -> u32 {
    if value == 0 {
        problems.invalid(key, "must be greater than 0");
    }
    value
}

fn validate_query(raw: &RawQuery, problems: &mut Problems<'_>) -> QueryConfig {
    let max_result_limit = positive(problems, "query.max_result_limit", raw.max_result_limit);
    let default_result_limit = positive(
        problems,
        "query.default_result_limit",
        raw.default_result_limit,
    );
    if default_result_limit > max_result_limit && max_result_limit > 0 {
        problems.invalid(
            "query.default_result_limit",
            format!(
                "{default_result_limit} is larger than query.max_result_limit ({max_result_limit})"
            ),
        );
    }
    let max_spss = positive(
        problems,
        "query.max_spans_per_span_set",
        raw.max_spans_per_span_set,
    );
    let default_spss = positive(
        problems,
        "query.default_spans_per_span_set",
        raw.default_spans_per_span_set,
    );
    if default_spss > max_spss && max_spss > 0 {
        problems.invalid(
            "query.default_spans_per_span_set",
            format!("{default_spss} is larger than query.max_spans_per_span_set ({max_spss})"),
        );
    }
    let metrics_default_step = match raw.metrics_default_step {
        RawStep::Auto => MetricsStep::Auto,
        RawStep::Fixed(step) if step.is_zero() => {
            problems.invalid(
                "query.metrics_default_step",
                "must be greater than 0 (use \"auto\" to derive it from the range)",
            );
            MetricsStep::Auto
        }
        RawStep::Fixed(step) => MetricsStep::Fixed(step),
    };
    QueryConfig {
        default_result_limit,
        max_result_limit,
        default_spans_per_span_set: default_spss,
        max_spans_per_span_set: max_spss,
        max_search_duration: positive_duration(
            problems,
            "query.max_search_duration",
            raw.max_search_duration,
        ),
        max_metrics_duration: positive_duration(
            problems,
            "query.max_metrics_duration",
            raw.max_metrics_duration,
        ),
        max_metrics_series: positive(problems, "query.max_metrics_series", raw.max_metrics_series),
        max_exemplars: raw.max_exemplars,
        metrics_default_step,
        recent_window: positive_duration(problems, "query.recent_window", raw.recent_window),
        trace_merge_window: raw.trace_merge_window,
    }
}

/// The tenant a per-tenant override is for. An override for a name no tenant can have
/// would silently never apply, so such a name is an error.
fn override_tenant(problems: &mut Problems<'_>, key: &str, name: &str) -> Option<TenantId> {
    match TenantId::new(name) {
        Ok(_) if name.is_empty() => {
            problems.invalid(key, "tenant ID must not be empty");
            None
        }
        Ok(tenant) => Some(tenant),
        Err(error) => {
            problems.invalid(key, format!("{name:?} is not a valid tenant ID: {error}"));
            None
        }
    }
}

fn validate_retention(raw: &RawRetention, problems: &mut Problems<'_>) -> RetentionConfig {
    let mut per_tenant = BTreeMap::new();
    for (name, retention) in &raw.per_tenant {
        let key = format!("retention.per_tenant.{name}");
        let Some(tenant) = override_tenant(problems, &key, name) else {
            continue;
        };
        per_tenant.insert(tenant, positive_duration(problems, &key, retention.0));
    }
    RetentionConfig {
        block_retention: positive_duration(
            problems,
            "retention.block_retention",
            raw.block_retention,
        ),
        per_tenant,
        interval: positive_duration(problems, "retention.interval", raw.interval),
    }
}

fn validate_limits(raw: &RawLimits, problems: &mut Problems<'_>) -> LimitsConfig {
    let defaults = TenantLimits {
        ingestion_rate: (raw.ingestion_rate.bytes() > 0).then(|| raw.ingestion_rate.bytes()),
        // A burst below one second of the rate would refuse requests the rate allows.
        ingestion_burst: raw.ingestion_burst.bytes().max(raw.ingestion_rate.bytes()),
        max_attribute_value_length: nonzero_bytes(raw.max_attribute_value_length),
        max_live_traces: nonzero(raw.max_live_traces),
        max_bytes_per_trace: nonzero_bytes(raw.max_bytes_per_trace),
        max_concurrent_queries: nonzero(raw.max_concurrent_queries),
        max_search_duration: None,
        max_result_limit: None,
    };
    let mut per_tenant = BTreeMap::new();
    for (name, overrides) in &raw.per_tenant {
        let key = format!("limits.per_tenant.{name}");
        let Some(tenant) = override_tenant(problems, &key, name) else {
            continue;
        };
        let rate = overrides.ingestion_rate.unwrap_or(raw.ingestion_rate);
        let burst = overrides.ingestion_burst.unwrap_or(raw.ingestion_burst);
        let mut limits = TenantLimits {
            ingestion_rate: (rate.bytes() > 0).then(|| rate.bytes()),
            ingestion_burst: burst.bytes().max(rate.bytes()),
            ..defaults
        };
        if let Some(max) = overrides.max_attribute_value_length {
            limits.max_attribute_value_length = nonzero_bytes(max);
        }
        if let Some(max) = overrides.max_live_traces {
            limits.max_live_traces = nonzero(max);
        }
        if let Some(max) = overrides.max_bytes_per_trace {
            limits.max_bytes_per_trace = nonzero_bytes(max);
        }
        if let Some(max) = overrides.max_concurrent_queries {
            limits.max_concurrent_queries = nonzero(max);
        }
        limits.max_search_duration = overrides
            .max_search_duration
            .map(|max| positive_duration(problems, &format!("{key}.max_search_duration"), max));
        limits.max_result_limit = overrides
            .max_result_limit
            .map(|max| positive(problems, &format!("{key}.max_result_limit"), max));
        per_tenant.insert(tenant, limits);
    }
    LimitsConfig {
        defaults,
        per_tenant,
    }
}

/// `0` means unlimited.
fn nonzero(value: u32) -> Option<usize> {
    (value > 0).then_some(value as usize)
}

/// `0` means unlimited.
fn nonzero_bytes(value: ByteSize) -> Option<usize> {
    (value.bytes() > 0).then_some(value.bytes() as usize)
}

const GENERATOR_PROCESSORS: [&str; 2] = ["service-graphs", "span-metrics"];

fn validate_generator(raw: &RawMetricsGenerator, problems: &mut Problems<'_>) -> GeneratorConfig {
    let processors = |problems: &mut Problems<'_>, key: &str, names: &[String]| {
        for name in names {
            if !GENERATOR_PROCESSORS.contains(&name.as_str()) {
                problems.invalid(key, expected_one_of(&GENERATOR_PROCESSORS, name));
            }
        }
        let has = |wanted: &str| names.iter().any(|name| name == wanted);
        (has("service-graphs"), has("span-metrics"))
    };
    let (service_graphs, span_metrics) =
        processors(problems, "metrics_generator.processors", &raw.processors);
    let defaults = GeneratorTenantConfig {
        enabled: raw.enabled,
        service_graphs,
        span_metrics,
        max_active_series: raw.max_active_series as usize,
    };
    let mut per_tenant = BTreeMap::new();
    for (name, overrides) in &raw.per_tenant {
        let key = format!("metrics_generator.per_tenant.{name}");
        let Some(tenant) = override_tenant(problems, &key, name) else {
            continue;
        };
        let mut config = defaults.clone();
        if let Some(enabled) = overrides.enabled {
            config.enabled = enabled;
        }
        if let Some(names) = &overrides.processors {
            (config.service_graphs, config.span_metrics) =
                processors(problems, &format!("{key}.processors"), names);
        }
        if let Some(max) = overrides.max_active_series {
            config.max_active_series = max as usize;
        }
        per_tenant.insert(tenant, config);
    }
    let sg = &raw.service_graphs;
    let sm = &raw.span_metrics;
    GeneratorConfig {
        defaults,
        per_tenant,
        stale_after: positive_duration(problems, "metrics_generator.stale_after", raw.stale_after),
        ingestion_time_range_slack: raw.ingestion_time_range_slack,
        queue_size: match raw.queue_size {
            0 => {
                problems.invalid("metrics_generator.queue_size", "must be at least 1");
                1
            }
            size => size as usize,
        },
        service_graphs: ServiceGraphsConfig {
            wait: positive_duration(problems, "metrics_generator.service_graphs.wait", sg.wait),
            max_items: match sg.max_items {
                0 => {
                    problems.invalid(
                        "metrics_generator.service_graphs.max_items",
                        "must be at least 1",
                    );
                    1
                }
                items => items as usize,
            },
            histogram_buckets: histogram_buckets(
                problems,
                "metrics_generator.service_graphs.histogram_buckets",
                &sg.histogram_buckets,
            ),
            dimensions: sg.dimensions.clone(),
            enable_client_server_prefix: sg.enable_client_server_prefix,
            enable_virtual_node_label: sg.enable_virtual_node_label,
            peer_attributes: sg.peer_attributes.clone(),
        },
        span_metrics: SpanMetricsConfig {
            histogram_buckets: histogram_buckets(
                problems,
                "metrics_generator.span_metrics.histogram_buckets",
                &sm.histogram_buckets,
            ),
            dimensions: sm.dimensions.clone(),
            intrinsic_service: sm.intrinsic_dimensions.service,
            intrinsic_span_name: sm.intrinsic_dimensions.span_name,
            intrinsic_span_kind: sm.intrinsic_dimensions.span_kind,
            intrinsic_status_code: sm.intrinsic_dimensions.status_code,
            intrinsic_status_message: sm.intrinsic_dimensions.status_message,
        },
        remote_write: validate_remote_write(&raw.remote_write, problems),
    }
}

fn histogram_buckets(problems: &mut Problems<'_>, key: &str, buckets: &[f64]) -> Vec<f64> {
    if buckets.is_empty() {
        problems.invalid(key, "at least one bucket is needed");
    } else if buckets.iter().any(|b| !b.is_finite() || *b <= 0.0) {
        problems.invalid(
            key,
            "buckets must be finite and greater than 0 (+Inf is implied)",
        );
    } else if buckets.windows(2).any(|pair| pair[0] >= pair[1]) {
        problems.invalid(key, "buckets must be strictly ascending");
    }
    buckets.to_vec()
}

/// Prometheus' label name syntax: `[a-zA-Z_][a-zA-Z0-9_]*`, and `__` is reserved.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn validate_remote_write(raw: &RawRemoteWrite, problems: &mut Problems<'_>) -> RemoteWriteConfig {
    const KEY: &str = "metrics_generator.remote_write";
    let mut endpoints = Vec::new();
    for (index, endpoint) in raw.endpoints.iter().enumerate() {
        let key = format!("{KEY}.endpoints[{index}]");
        if !is_http_url(&endpoint.url) {
            problems.invalid(
                &format!("{key}.url"),
                format!(
                    "expected a URL like http://127.0.0.1:9090/api/v1/write, got {:?}",
                    endpoint.url
                ),
            );
        }
        let mut headers = Vec::new();
        for (name, value) in &endpoint.headers {
            let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && http::HeaderValue::from_str(value).is_ok();
            if !valid {
                // The value may be a secret: name the header, never print the value.
                problems.invalid(
                    &format!("{key}.headers.{name}"),
                    "not a valid HTTP header name and value",
                );
            }
            headers.push((name.clone(), value.clone()));
        }
        endpoints.push(RemoteWriteEndpoint {
            url: endpoint.url.clone(),
            headers,
            send_tenant_header: endpoint.send_tenant_header,
        });
    }
    for name in raw.external_labels.keys() {
        if !is_label_name(name) {
            problems.invalid(
                &format!("{KEY}.external_labels.{name}"),
                "not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
            );
        }
    }
    let inject = raw.inject_tenant_id_as.trim();
    if !inject.is_empty() && !is_label_name(inject) {
        problems.invalid(
            &format!("{KEY}.inject_tenant_id_as"),
            format!("{inject:?} is not a valid Prometheus label name"),
        );
    }
    RemoteWriteConfig {
        endpoints,
        interval: positive_duration(problems, &format!("{KEY}.interval"), raw.interval),
        timeout: positive_duration(problems, &format!("{KEY}.timeout"), raw.timeout),
        external_labels: raw.external_labels.clone(),
        inject_tenant_id_as: (!inject.is_empty()).then(|| inject.to_owned()),
    }
}

fn is_http_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|host| !host.is_empty())
}

/// Inputs merged at once: each holds a row group in memory during the merge.
const MAX_COMPACTION_INPUTS: u32 = 64;

fn validate_compaction(raw: &RawCompaction, problems: &mut Problems<'_>) -> CompactionConfig {
    if !(2..=MAX_COMPACTION_INPUTS).contains(&raw.max_input_blocks) {
        problems.invalid(
            "compaction.max_input_blocks",
            format!(
                "must be between 2 and {MAX_COMPACTION_INPUTS} (a compaction merges at least \
                 two blocks)"
            ),
        );
    }
    if raw.lease_duration < raw.cycle * 2 {
        problems.invalid(
            "compaction.lease_duration",
            format!(
                "must be at least twice compaction.cycle ({}): the lease is renewed once a cycle",
                humantime::format_duration(raw.cycle)
            ),
        );
    }
    CompactionConfig {
        enabled: raw.enabled,
        window: positive_duration(problems, "compaction.window", raw.window),
        max_input_blocks: raw.max_input_blocks as usize,
        max_block_bytes: positive_size(problems, "compaction.max_block_size", raw.max_block_size),
        cycle: positive_duration(problems, "compaction.cycle", raw.cycle),
        // Zero is allowed: replaced blocks go at once, and a query still reading one
        // gets a retryable error.
        compacted_block_retention: raw.compacted_block_retention,
        lease_duration: raw.lease_duration,
    }
}

fn validate_log(raw: &RawLog, problems: &mut Problems<'_>) -> LogConfig {
    if let Err(message) = check_log_filter(&raw.level) {
        problems.invalid("log.level", message);
    }
    LogConfig {
        level: raw.level.trim().to_owned(),
        format: match raw.format {
            RawLogFormat::Auto => LogFormat::Auto,
            RawLogFormat::Text => LogFormat::Text,
            RawLogFormat::Json => LogFormat::Json,
            RawLogFormat::Journald => LogFormat::Journald,
        },
    }
}

/// Accepts what `EnvFilter` accepts, except a bare word that is not a level: the filter
/// syntax reads `warning` or `verbose` as "everything from the target named warning",
/// which silently turns logging off instead of raising the level.
fn check_log_filter(level: &str) -> Result<(), String> {
    const LEVELS: &str = "off, error, warn, info, debug or trace";
    if level.trim().is_empty() {
        return Err(format!("must not be empty (use one of {LEVELS})"));
    }
    if let Err(error) = EnvFilter::builder().parse(level) {
        return Err(format!("{level:?} is not a valid log filter: {error}"));
    }
    let bare_non_level = level
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .find(|directive| {
            !directive.contains(['=', '[']) && directive.parse::<LevelFilter>().is_err()
        });
    match bare_non_level {
        Some(word) => Err(format!(
            "{word:?} is not a level (use one of {LEVELS}, or target=level directives like spoor=debug,info)"
        )),
        None => Ok(()),
    }
}

/// A listener's credentials, with every secret file read now so that `--check-config`
/// and start-up fail on a missing or empty file, naming the key.
fn auth(problems: &mut Problems<'_>, key: &str, raw: &RawAuth) -> AuthConfig {
    let mut credentials = Vec::new();
    for (index, bearer) in raw.bearer.iter().enumerate() {
        let entry = format!("{key}.bearer[{index}]");
        let token = secret_file(
            problems,
            &format!("{entry}.token_file"),
            bearer.token_file.as_deref(),
        );
        let tenant = credential_tenant(problems, &entry, bearer.tenant.as_deref());
        if let Some(token) = token {
            credentials.push(Credential::Bearer { token, tenant });
        }
    }
    let mut usernames = std::collections::BTreeSet::new();
    for (index, basic) in raw.basic.iter().enumerate() {
        let entry = format!("{key}.basic[{index}]");
        if basic.username.is_empty() {
            problems.invalid(&format!("{entry}.username"), "must not be empty");
        } else if basic.username.contains(':') {
            // Basic auth separates user and password at the first colon.
            problems.invalid(&format!("{entry}.username"), "must not contain ':'");
        } else if !usernames.insert(basic.username.as_str()) {
            problems.invalid(
                &format!("{entry}.username"),
                format!("{:?} is listed twice", basic.username),
            );
        }
        let password = secret_file(
            problems,
            &format!("{entry}.password_file"),
            basic.password_file.as_deref(),
        );
        let tenant = credential_tenant(problems, &entry, basic.tenant.as_deref());
        if let Some(password) = password {
            credentials.push(Credential::Basic {
                username: basic.username.clone(),
                password,
                tenant,
            });
        }
    }
    AuthConfig { credentials }
}

fn secret_file(problems: &mut Problems<'_>, key: &str, path: Option<&Path>) -> Option<Secret> {
    match Secret::from_config(path, "spoor-server.service") {
        Ok(secret) => Some(secret),
        Err(message) => {
            problems.invalid(key, message);
            None
        }
    }
}

fn credential_tenant(
    problems: &mut Problems<'_>,
    entry: &str,
    tenant: Option<&str>,
) -> Option<TenantId> {
    let name = tenant?;
    match TenantId::new(name) {
        Ok(tenant) => Some(tenant),
        Err(error) => {
            problems.invalid(&format!("{entry}.tenant"), error.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_overlap_on_same_port_when_ips_can_collide() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("test address");
        assert!(addresses_overlap(
            addr("127.0.0.1:3200"),
            addr("127.0.0.1:3200")
        ));
        assert!(addresses_overlap(
            addr("0.0.0.0:3200"),
            addr("127.0.0.1:3200")
        ));
        assert!(addresses_overlap(addr("127.0.0.1:3200"), addr("[::]:3200")));
        assert!(!addresses_overlap(addr("0.0.0.0:3200"), addr("[::1]:3200")));
        assert!(!addresses_overlap(
            addr("127.0.0.1:3200"),
            addr("127.0.0.2:3200")
        ));
        assert!(!addresses_overlap(
            addr("127.0.0.1:3200"),
            addr("127.0.0.1:3201")
        ));
        // Port 0 means "any free port": tests run every listener on 127.0.0.1:0.
        assert!(!addresses_overlap(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
    }

    #[test]
    fn log_filters_accept_levels_and_directives_but_not_stray_words() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "spoor=debug,info",
            "spoor::server=trace",
            "warn,tower=off",
        ] {
            assert_eq!(check_log_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "  ", "warning", "verbose", "info,loud", "spoor=loud"] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
    }
}
