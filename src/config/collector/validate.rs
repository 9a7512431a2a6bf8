//! Raw sections → validated [`CollectorConfig`]: component types, values, and the
//! pipeline graph. Every rule reports into [`Problems`] and carries on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_yaml::Value;

use super::load::read_section;
use super::processors;
use super::raw::*;
use super::tail_sampling;
use super::*;
use crate::auth::{Credential, Secret};
use crate::config::validate::{addresses_overlap, Problems};
use crate::config::values::ByteSize;
use crate::config::{LogConfig, LogFormat, ServerTlsConfig};
use crate::tenant::TenantId;

const SUPPORTED_RECEIVERS: &[&str] = &["jaeger", "otlp", "zipkin"];
const SUPPORTED_PROCESSORS: &[&str] = &[
    "attributes",
    "batch",
    "memory_limiter",
    "probabilistic_sampler",
    "redaction",
    "resource",
    "tail_sampling",
];
const SUPPORTED_EXPORTERS: &[&str] = &["debug", "loadbalancing", "otlp", "otlphttp"];
const SUPPORTED_EXTENSIONS: &[&str] = &[
    "basicauth",
    "bearertokenauth",
    "file_storage",
    "health_check",
];

/// A single request is held whole in memory; larger limits are almost certainly typos.
const MAX_REQUEST_BYTES: u64 = 1 << 30;

/// One component (or pipeline) section, its type not yet known.
#[derive(Debug, Clone)]
pub(crate) struct RawSection {
    /// The component ID as written (`otlp/backup`).
    pub(crate) id: String,
    /// Full key path (`exporters.otlp/backup`).
    pub(crate) key: String,
    pub(crate) value: Value,
}

/// The file split into sections, before the component types are checked.
#[derive(Debug, Default)]
pub(crate) struct RawCollector {
    pub(crate) receivers: Vec<RawSection>,
    pub(crate) processors: Vec<RawSection>,
    pub(crate) exporters: Vec<RawSection>,
    pub(crate) extensions: Vec<RawSection>,
    pub(crate) connectors: Vec<RawSection>,
    pub(crate) service_extensions: Vec<String>,
    pub(crate) pipelines: Vec<RawSection>,
    pub(crate) telemetry: Option<Value>,
    /// Exact text of values set by `SPOOR_` variables, by key path.
    pub(crate) env_strings: HashMap<String, String>,
}

/// Components that were defined, whether or not their section was valid, so a broken
/// section is reported once rather than again as "not defined" by every pipeline.
#[derive(Default)]
struct Defined {
    receivers: BTreeSet<ComponentId>,
    processors: BTreeSet<ComponentId>,
    exporters: BTreeSet<ComponentId>,
    extensions: BTreeSet<ComponentId>,
}

pub(crate) fn validate(
    raw: RawCollector,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> CollectorConfig {
    let mut defined = Defined::default();
    let env = &raw.env_strings;

    let mut extension_configs = BTreeMap::new();
    for section in &raw.extensions {
        let Some(id) = parse_id(problems, section) else {
            continue;
        };
        defined.extensions.insert(id.clone());
        let config = match id.kind() {
            "health_check" => read_section::<RawHealthCheck>(section, env, problems)
                .and_then(|raw| health_check(problems, &section.key, raw)),
            "file_storage" => read_section::<RawFileStorage>(section, env, problems)
                .map(|raw| file_storage(problems, warnings, &section.key, raw)),
            "bearertokenauth" => read_section::<RawBearerTokenAuth>(section, env, problems)
                .and_then(|raw| bearer_token_auth(problems, &section.key, raw)),
            "basicauth" => read_section::<RawBasicAuth>(section, env, problems)
                .and_then(|raw| basic_auth(problems, &section.key, raw)),
            other => {
                unsupported(
                    problems,
                    &section.key,
                    "extension",
                    other,
                    SUPPORTED_EXTENSIONS,
                    None,
                );
                None
            }
        };
        if let Some(config) = config {
            extension_configs.insert(id, config);
        }
    }
    let enabled_extensions = service_extensions(problems, &raw.service_extensions, &defined);
    let extension_lookup = ExtensionLookup {
        configs: &extension_configs,
        enabled: &enabled_extensions,
        defined: &defined.extensions,
    };

    let mut receivers = BTreeMap::new();
    for section in &raw.receivers {
        let Some(id) = parse_id(problems, section) else {
            continue;
        };
        defined.receivers.insert(id.clone());
        let config = match id.kind() {
            "otlp" => read_section::<RawOtlpReceiver>(section, env, problems)
                .and_then(|raw| otlp_receiver(problems, &section.key, raw, &extension_lookup)),
            "zipkin" => read_section::<RawZipkinReceiver>(section, env, problems)
                .and_then(|raw| zipkin_receiver(problems, &section.key, &raw, &extension_lookup)),
            "jaeger" => read_section::<RawJaegerReceiver>(section, env, problems)
                .and_then(|raw| jaeger_receiver(problems, &section.key, raw, &extension_lookup)),
            other => {
                unsupported(
                    problems,
                    &section.key,
                    "receiver",
                    other,
                    SUPPORTED_RECEIVERS,
                    None,
                );
                None
            }
        };
        if let Some(config) = config {
            receivers.insert(id, config);
        }
    }

    let mut processors = BTreeMap::new();
    for section in &raw.processors {
        let Some(id) = parse_id(problems, section) else {
            continue;
        };
        defined.processors.insert(id.clone());
        let config = match id.kind() {
            "batch" => read_section::<RawBatch>(section, env, problems)
                .map(|raw| batch(problems, &section.key, raw)),
            "memory_limiter" => read_section::<RawMemoryLimiter>(section, env, problems)
                .map(|raw| memory_limiter(problems, warnings, &section.key, raw)),
            "attributes" => {
                read_section::<processors::RawAttributes>(section, env, problems).map(|raw| {
                    ProcessorConfig::Attributes(processors::attributes(problems, &section.key, raw))
                })
            }
            "resource" => {
                read_section::<processors::RawResource>(section, env, problems).map(|raw| {
                    ProcessorConfig::Resource(processors::resource(problems, &section.key, raw))
                })
            }
            "redaction" => {
                read_section::<processors::RawRedaction>(section, env, problems).map(|raw| {
                    ProcessorConfig::Redaction(processors::redaction(problems, &section.key, raw))
                })
            }
            "probabilistic_sampler" => read_section::<processors::RawProbabilisticSampler>(
                section, env, problems,
            )
            .map(|raw| {
                ProcessorConfig::ProbabilisticSampler(processors::probabilistic_sampler(
                    problems,
                    &section.key,
                    raw,
                ))
            }),
            "tail_sampling" => {
                read_section::<tail_sampling::RawTailSampling>(section, env, problems).map(|raw| {
                    ProcessorConfig::TailSampling(tail_sampling::tail_sampling(
                        problems,
                        &section.key,
                        raw,
                    ))
                })
            }
            other => {
                unsupported(
                    problems,
                    &section.key,
                    "processor",
                    other,
                    SUPPORTED_PROCESSORS,
                    None,
                );
                None
            }
        };
        if let Some(config) = config {
            processors.insert(id, config);
        }
    }

    let storage = &extension_lookup;
    let mut exporters = BTreeMap::new();
    for section in &raw.exporters {
        let Some(id) = parse_id(problems, section) else {
            continue;
        };
        defined.exporters.insert(id.clone());
        let config = match id.kind() {
            "otlp" => read_section::<RawOtlpExporter>(section, env, problems)
                .map(|raw| otlp_exporter(problems, &section.key, &id, raw, storage)),
            "otlphttp" => read_section::<RawOtlpHttpExporter>(section, env, problems)
                .map(|raw| otlp_http_exporter(problems, &section.key, &id, raw, storage)),
            "debug" => read_section::<RawDebugExporter>(section, env, problems)
                .map(|raw| debug_exporter(problems, &section.key, raw)),
            "loadbalancing" => read_section::<RawLoadBalancingExporter>(section, env, problems)
                .map(|raw| {
                    loadbalancing_exporter(problems, warnings, &section.key, &id, raw, storage)
                }),
            "logging" => {
                unsupported(
                    problems,
                    &section.key,
                    "exporter",
                    "logging",
                    SUPPORTED_EXPORTERS,
                    Some("; the OpenTelemetry Collector replaced it by debug"),
                );
                None
            }
            other => {
                unsupported(
                    problems,
                    &section.key,
                    "exporter",
                    other,
                    SUPPORTED_EXPORTERS,
                    None,
                );
                None
            }
        };
        if let Some(config) = config {
            exporters.insert(id, config);
        }
    }

    for section in &raw.connectors {
        problems.invalid(
            &section.key,
            format!(
                "unsupported connector type {:?} (spoor-collector supports no connectors)",
                section.id.split('/').next().unwrap_or_default()
            ),
        );
    }

    let pipelines = pipelines(problems, &raw, &defined);
    if raw.pipelines.is_empty() {
        problems.invalid(
            "service.pipelines",
            "at least one traces pipeline is required",
        );
    }

    let telemetry = telemetry(problems, &raw);
    check_distinct_listeners(
        problems,
        &receivers,
        &extension_configs,
        &enabled_extensions,
        &telemetry,
    );

    let extensions = enabled_extensions
        .into_iter()
        .filter_map(|id| {
            let config = extension_configs.get(&id)?.clone();
            Some((id, config))
        })
        .collect();
    CollectorConfig {
        receivers,
        processors,
        exporters,
        extensions,
        pipelines,
        telemetry,
        warnings: std::mem::take(warnings),
    }
}

fn parse_id(problems: &mut Problems<'_>, section: &RawSection) -> Option<ComponentId> {
    match ComponentId::parse(&section.id) {
        Ok(id) => Some(id),
        Err(message) => {
            problems.invalid(&section.key, message);
            None
        }
    }
}

fn unsupported(
    problems: &mut Problems<'_>,
    key: &str,
    what: &str,
    kind: &str,
    supported: &[&str],
    hint: Option<&str>,
) {
    problems.invalid(
        key,
        format!(
            "unsupported {what} type {kind:?} (supported: {}){}",
            supported.join(", "),
            hint.unwrap_or("")
        ),
    );
}

fn service_extensions(
    problems: &mut Problems<'_>,
    listed: &[String],
    defined: &Defined,
) -> Vec<ComponentId> {
    let mut enabled = Vec::new();
    for (index, text) in listed.iter().enumerate() {
        let key = format!("service.extensions[{index}]");
        let id = match ComponentId::parse(text) {
            Ok(id) => id,
            Err(message) => {
                problems.invalid(&key, message);
                continue;
            }
        };
        if !defined.extensions.contains(&id) {
            problems.invalid(
                &key,
                format!("extension \"{id}\" is not defined in extensions"),
            );
            continue;
        }
        if enabled.contains(&id) {
            problems.invalid(&key, format!("extension \"{id}\" is listed twice"));
            continue;
        }
        enabled.push(id);
    }
    enabled
}

// -------------------------------------------------------------------- values

const PLACEHOLDER_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// `host:port` as the OpenTelemetry Collector writes listen endpoints: an IP address,
/// `localhost` (loopback), or nothing (`:4317`, every interface).
fn listen_endpoint(problems: &mut Problems<'_>, key: &str, text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Some(address);
    }
    let parsed = text.rsplit_once(':').and_then(|(host, port)| {
        let port: u16 = port.parse().ok()?;
        let ip = match host {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            other => other
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?,
        };
        Some(SocketAddr::new(ip, port))
    });
    if parsed.is_none() {
        problems.invalid(
            key,
            format!(
                "expected IP:port like 127.0.0.1:4317, 0.0.0.0:4317, localhost:4317 or :4317 \
                 (host names other than localhost are not resolved), got {text:?}"
            ),
        );
    }
    parsed
}

/// `<key>.tls` of a listener: present means TLS, so its files are required.
fn listener_tls(
    problems: &mut Problems<'_>,
    key: &str,
    raw: Option<&RawServerTls>,
) -> Option<ServerTlsConfig> {
    let raw = raw?;
    crate::config::tls::server_tls(
        problems,
        &format!("{key}.tls"),
        [&raw.cert_file, &raw.key_file, &raw.client_ca_file],
        raw.reload_interval,
        true,
    )
}

fn positive_duration(problems: &mut Problems<'_>, key: &str, duration: Duration) -> Duration {
    if duration.is_zero() {
        problems.invalid(key, "must be greater than 0");
    }
    duration
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------- receivers

fn otlp_receiver(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawOtlpReceiver,
    extensions: &ExtensionLookup<'_>,
) -> Option<ReceiverConfig> {
    let grpc = raw.protocols.grpc.map(|grpc| {
        let endpoint_key = format!("{key}.protocols.grpc.endpoint");
        let endpoint = listen_endpoint(problems, &endpoint_key, &grpc.endpoint);
        if grpc.transport != "tcp" {
            problems.invalid(
                &format!("{key}.protocols.grpc.transport"),
                format!("only \"tcp\" is supported, got {:?}", grpc.transport),
            );
        }
        let size_key = format!("{key}.protocols.grpc.max_recv_msg_size_mib");
        GrpcReceiverConfig {
            endpoint: endpoint.unwrap_or(PLACEHOLDER_ADDRESS),
            max_recv_msg_bytes: grpc_message_limit(problems, &size_key, grpc.max_recv_msg_size_mib),
            tls: listener_tls(
                problems,
                &format!("{key}.protocols.grpc"),
                grpc.tls.as_ref(),
            ),
            auth: receiver_auth(
                problems,
                &format!("{key}.protocols.grpc.auth.authenticator"),
                grpc.auth.as_ref(),
                extensions,
            ),
        }
    });
    let http = raw.protocols.http.map(|http| {
        let endpoint_key = format!("{key}.protocols.http.endpoint");
        let endpoint = listen_endpoint(problems, &endpoint_key, &http.endpoint);
        let size_key = format!("{key}.protocols.http.max_request_body_size");
        let max_request_body_bytes =
            http_body_limit(problems, &size_key, http.max_request_body_size);
        if http.traces_url_path != crate::receiver::http::TRACES_PATH {
            problems.invalid(
                &format!("{key}.protocols.http.traces_url_path"),
                format!(
                    "only {} is supported, got {:?}",
                    crate::receiver::http::TRACES_PATH,
                    http.traces_url_path
                ),
            );
        }
        HttpReceiverConfig {
            endpoint: endpoint.unwrap_or(PLACEHOLDER_ADDRESS),
            max_request_body_bytes,
            tls: listener_tls(
                problems,
                &format!("{key}.protocols.http"),
                http.tls.as_ref(),
            ),
            auth: receiver_auth(
                problems,
                &format!("{key}.protocols.http.auth.authenticator"),
                http.auth.as_ref(),
                extensions,
            ),
        }
    });
    if grpc.is_none() && http.is_none() {
        problems.invalid(
            &format!("{key}.protocols"),
            "must enable at least one protocol (grpc: or http:)",
        );
        return None;
    }
    Some(ReceiverConfig::Otlp(OtlpReceiverConfig { grpc, http }))
}

/// `max_recv_msg_size_mib` in bytes, reported unless 1–1024.
fn grpc_message_limit(problems: &mut Problems<'_>, key: &str, mib: u64) -> usize {
    let bytes = mib.saturating_mul(1 << 20);
    if mib == 0 || bytes > MAX_REQUEST_BYTES {
        problems.invalid(key, "must be between 1 and 1024");
    }
    to_usize(bytes)
}

/// `max_request_body_size` in bytes, reported unless 1 byte–1GiB.
fn http_body_limit(problems: &mut Problems<'_>, key: &str, size: ByteSize) -> usize {
    let bytes = size.bytes();
    if bytes == 0 || bytes > MAX_REQUEST_BYTES {
        problems.invalid(key, "must be between 1 byte and 1GiB");
    }
    to_usize(bytes)
}

fn zipkin_receiver(
    problems: &mut Problems<'_>,
    key: &str,
    raw: &RawZipkinReceiver,
    extensions: &ExtensionLookup<'_>,
) -> Option<ReceiverConfig> {
    let auth = receiver_auth(
        problems,
        &format!("{key}.auth.authenticator"),
        raw.auth.as_ref(),
        extensions,
    );
    let endpoint = listen_endpoint(problems, &format!("{key}.endpoint"), &raw.endpoint)?;
    Some(ReceiverConfig::Zipkin(ZipkinReceiverConfig {
        endpoint,
        parse_string_tags: raw.parse_string_tags,
        max_request_body_bytes: to_usize(RawHttpProtocol::default().max_request_body_size.bytes()),
        tls: listener_tls(problems, key, raw.tls.as_ref()),
        auth,
    }))
}

/// Loopback defaults, as for the other receivers (contrib listens on `0.0.0.0`).
const JAEGER_GRPC_ENDPOINT: &str = "127.0.0.1:14250";
const JAEGER_THRIFT_HTTP_ENDPOINT: &str = "127.0.0.1:14268";
const JAEGER_THRIFT_COMPACT_ENDPOINT: &str = "127.0.0.1:6831";
const JAEGER_THRIFT_BINARY_ENDPOINT: &str = "127.0.0.1:6832";
/// Largest UDP payload.
const MAX_UDP_PACKET: u64 = 65_507;

fn jaeger_receiver(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawJaegerReceiver,
    extensions: &ExtensionLookup<'_>,
) -> Option<ReceiverConfig> {
    let protocols = raw.protocols;
    let grpc = protocols.grpc.map(|grpc| {
        let prefix = format!("{key}.protocols.grpc");
        let endpoint = grpc.endpoint.as_deref().unwrap_or(JAEGER_GRPC_ENDPOINT);
        let endpoint = listen_endpoint(problems, &format!("{prefix}.endpoint"), endpoint);
        let size_key = format!("{prefix}.max_recv_msg_size_mib");
        GrpcReceiverConfig {
            endpoint: endpoint.unwrap_or(PLACEHOLDER_ADDRESS),
            max_recv_msg_bytes: grpc_message_limit(problems, &size_key, grpc.max_recv_msg_size_mib),
            tls: listener_tls(problems, &prefix, grpc.tls.as_ref()),
            auth: receiver_auth(
                problems,
                &format!("{prefix}.auth.authenticator"),
                grpc.auth.as_ref(),
                extensions,
            ),
        }
    });
    let thrift_http = protocols.thrift_http.map(|http| {
        let prefix = format!("{key}.protocols.thrift_http");
        let endpoint = http
            .endpoint
            .as_deref()
            .unwrap_or(JAEGER_THRIFT_HTTP_ENDPOINT);
        let endpoint = listen_endpoint(problems, &format!("{prefix}.endpoint"), endpoint);
        let size_key = format!("{prefix}.max_request_body_size");
        HttpReceiverConfig {
            endpoint: endpoint.unwrap_or(PLACEHOLDER_ADDRESS),
            max_request_body_bytes: http_body_limit(
                problems,
                &size_key,
                http.max_request_body_size,
            ),
            tls: listener_tls(problems, &prefix, http.tls.as_ref()),
            auth: receiver_auth(
                problems,
                &format!("{prefix}.auth.authenticator"),
                http.auth.as_ref(),
                extensions,
            ),
        }
    });
    let mut udp = |name: &str, default_endpoint: &str, raw: RawJaegerUdp| {
        let prefix = format!("{key}.protocols.{name}");
        let endpoint = raw.endpoint.as_deref().unwrap_or(default_endpoint);
        let endpoint = listen_endpoint(problems, &format!("{prefix}.endpoint"), endpoint);
        if raw.queue_size == 0 {
            problems.invalid(&format!("{prefix}.queue_size"), "must be at least 1");
        }
        let packet = raw.max_packet_size.bytes();
        if packet == 0 || packet > MAX_UDP_PACKET {
            problems.invalid(
                &format!("{prefix}.max_packet_size"),
                format!("must be between 1 and {MAX_UDP_PACKET} bytes (the largest UDP payload)"),
            );
        }
        if raw.workers == 0 {
            problems.invalid(&format!("{prefix}.workers"), "must be at least 1");
        }
        if raw.socket_buffer_size.bytes() > MAX_REQUEST_BYTES {
            problems.invalid(
                &format!("{prefix}.socket_buffer_size"),
                "must be at most 1GiB",
            );
        }
        JaegerUdpConfig {
            endpoint: endpoint.unwrap_or(PLACEHOLDER_ADDRESS),
            queue_size: raw.queue_size as usize,
            max_packet_size: to_usize(packet),
            workers: raw.workers as usize,
            socket_buffer_size: to_usize(raw.socket_buffer_size.bytes()),
        }
    };
    let thrift_compact = protocols
        .thrift_compact
        .map(|raw| udp("thrift_compact", JAEGER_THRIFT_COMPACT_ENDPOINT, raw));
    let thrift_binary = protocols
        .thrift_binary
        .map(|raw| udp("thrift_binary", JAEGER_THRIFT_BINARY_ENDPOINT, raw));
    if grpc.is_none()
        && thrift_http.is_none()
        && thrift_compact.is_none()
        && thrift_binary.is_none()
    {
        problems.invalid(
            &format!("{key}.protocols"),
            "must enable at least one protocol (grpc:, thrift_http:, thrift_compact: or thrift_binary:)",
        );
        return None;
    }
    Some(ReceiverConfig::Jaeger(JaegerReceiverConfig {
        grpc,
        thrift_http,
        thrift_compact,
        thrift_binary,
    }))
}

// --------------------------------------------------------------- processors

fn batch(problems: &mut Problems<'_>, key: &str, raw: RawBatch) -> ProcessorConfig {
    let size = (raw.send_batch_size > 0).then_some(raw.send_batch_size as usize);
    let max = (raw.send_batch_max_size > 0).then_some(raw.send_batch_max_size as usize);
    if let (Some(size), Some(max)) = (size, max) {
        if max < size {
            problems.invalid(
                &format!("{key}.send_batch_max_size"),
                format!("must be 0 or at least send_batch_size ({size})"),
            );
        }
    }
    for (index, metadata_key) in raw.metadata_keys.iter().enumerate() {
        if !metadata_key.eq_ignore_ascii_case(crate::tenant::TENANT_HEADER) {
            problems.invalid(
                &format!("{key}.metadata_keys[{index}]"),
                format!(
                    "only {} is supported (batches are always kept per tenant), got {metadata_key:?}",
                    crate::tenant::TENANT_HEADER
                ),
            );
        }
    }
    if raw.metadata_cardinality_limit == 0 {
        problems.invalid(
            &format!("{key}.metadata_cardinality_limit"),
            "must be greater than 0",
        );
    }
    ProcessorConfig::Batch(BatchConfig {
        send_batch_size: size,
        send_batch_max_size: max,
        timeout: raw.timeout,
        max_tenants: raw.metadata_cardinality_limit.max(1) as usize,
    })
}

fn memory_limiter(
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
    key: &str,
    raw: RawMemoryLimiter,
) -> ProcessorConfig {
    let check_interval = positive_duration(
        problems,
        &format!("{key}.check_interval"),
        raw.check_interval,
    );
    if raw.ballast_size_mib.is_some() {
        warnings.push(format!(
            "{key}.ballast_size_mib is ignored (a Go memory ballast; spoor-collector has none)"
        ));
    }
    let limit = match (raw.limit_mib, raw.limit_percentage) {
        (0, 0) => {
            problems.invalid(
                &format!("{key}.limit_mib"),
                "set limit_mib or limit_percentage",
            );
            MemoryLimit::Absolute {
                limit_bytes: 0,
                spike_bytes: 0,
            }
        }
        (limit_mib, 0) => {
            // The OpenTelemetry Collector's default spike allowance: 20% of the limit.
            let spike_mib = if raw.spike_limit_mib == 0 {
                limit_mib / 5
            } else {
                raw.spike_limit_mib
            };
            if spike_mib >= limit_mib {
                problems.invalid(
                    &format!("{key}.spike_limit_mib"),
                    format!("must be smaller than limit_mib ({limit_mib})"),
                );
            }
            MemoryLimit::Absolute {
                limit_bytes: limit_mib.saturating_mul(1 << 20),
                spike_bytes: spike_mib.saturating_mul(1 << 20),
            }
        }
        (0, limit_percent) => {
            if limit_percent > 100 {
                problems.invalid(&format!("{key}.limit_percentage"), "must be at most 100");
            }
            let spike_percent = raw.spike_limit_percentage;
            if spike_percent >= limit_percent {
                problems.invalid(
                    &format!("{key}.spike_limit_percentage"),
                    format!("must be smaller than limit_percentage ({limit_percent})"),
                );
            }
            MemoryLimit::Percentage {
                limit_percent,
                spike_percent,
            }
        }
        (_, _) => {
            problems.invalid(
                &format!("{key}.limit_percentage"),
                "set either limit_mib or limit_percentage, not both",
            );
            MemoryLimit::Absolute {
                limit_bytes: 0,
                spike_bytes: 0,
            }
        }
    };
    ProcessorConfig::MemoryLimiter(MemoryLimiterConfig {
        check_interval,
        limit,
    })
}

// ---------------------------------------------------------------- exporters

/// Where `sending_queue.storage` and `auth.authenticator` look up extensions.
struct ExtensionLookup<'a> {
    configs: &'a BTreeMap<ComponentId, ExtensionConfig>,
    enabled: &'a [ComponentId],
    defined: &'a BTreeSet<ComponentId>,
}

fn compression(problems: &mut Problems<'_>, key: &str, text: &str) -> Compression {
    match text.trim().to_ascii_lowercase().as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "" | "none" => Compression::None,
        other => {
            problems.invalid(
                key,
                crate::config::values::expected_one_of(&["gzip", "zstd", "none"], other),
            );
            Compression::None
        }
    }
}

fn headers(map: BTreeMap<String, String>) -> Vec<(String, String)> {
    map.into_iter().collect()
}

fn retry(problems: &mut Problems<'_>, key: &str, raw: RawRetry) -> RetryConfig {
    if raw.enabled {
        positive_duration(
            problems,
            &format!("{key}.initial_interval"),
            raw.initial_interval,
        );
        positive_duration(problems, &format!("{key}.max_interval"), raw.max_interval);
        if raw.multiplier < 1.0 || !raw.multiplier.is_finite() {
            problems.invalid(&format!("{key}.multiplier"), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&raw.randomization_factor) {
            problems.invalid(
                &format!("{key}.randomization_factor"),
                "must be between 0 and 1",
            );
        }
    }
    RetryConfig {
        enabled: raw.enabled,
        initial_interval: raw.initial_interval,
        randomization_factor: raw.randomization_factor,
        multiplier: raw.multiplier,
        max_interval: raw.max_interval,
        max_elapsed_time: (!raw.max_elapsed_time.is_zero()).then_some(raw.max_elapsed_time),
    }
}

fn queue(
    problems: &mut Problems<'_>,
    key: &str,
    exporter: &ComponentId,
    raw: RawQueue,
    storage: &ExtensionLookup<'_>,
) -> QueueConfig {
    if raw.num_consumers == 0 {
        problems.invalid(&format!("{key}.num_consumers"), "must be greater than 0");
    }
    if raw.queue_size == 0 {
        problems.invalid(&format!("{key}.queue_size"), "must be greater than 0");
    }
    let sizer = match raw.sizer.as_str() {
        "requests" => QueueSizer::Requests,
        "items" => QueueSizer::Items,
        "bytes" => QueueSizer::Bytes,
        other => {
            problems.invalid(
                &format!("{key}.sizer"),
                crate::config::values::expected_one_of(&["requests", "items", "bytes"], other),
            );
            QueueSizer::Requests
        }
    };
    let persistent = match (raw.storage, raw.persistent) {
        (Some(_), Some(_)) => {
            problems.invalid(
                &format!("{key}.persistent"),
                "set either storage (an extension) or persistent, not both",
            );
            None
        }
        (Some(storage_id), None) => file_storage_queue(
            problems,
            &format!("{key}.storage"),
            exporter,
            &storage_id,
            storage,
        ),
        (None, Some(persistent)) => {
            if persistent.directory.as_os_str().is_empty() {
                problems.invalid(&format!("{key}.persistent.directory"), "must not be empty");
            }
            if persistent.max_size.bytes() == 0 {
                problems.invalid(
                    &format!("{key}.persistent.max_size"),
                    "must be greater than 0",
                );
            }
            Some(PersistentQueueConfig {
                directory: persistent.directory.join(exporter.file_name()),
                max_bytes: persistent.max_size.bytes(),
                fsync: persistent.fsync,
            })
        }
        (None, None) => None,
    };
    if persistent.is_some() && raw.wait_for_result {
        problems.invalid(
            &format!("{key}.wait_for_result"),
            "is not available with a persistent queue (which acknowledges once on disk)",
        );
    }
    if persistent.is_some() && !raw.enabled {
        problems.invalid(
            &format!("{key}.enabled"),
            "a persistent queue needs the sending queue enabled",
        );
    }
    QueueConfig {
        enabled: raw.enabled,
        num_consumers: raw.num_consumers.max(1) as usize,
        queue_size: raw.queue_size.max(1),
        sizer,
        block_on_overflow: raw.block_on_overflow,
        wait_for_result: raw.wait_for_result,
        persistent,
    }
}

fn file_storage_queue(
    problems: &mut Problems<'_>,
    key: &str,
    exporter: &ComponentId,
    storage_id: &str,
    storage: &ExtensionLookup<'_>,
) -> Option<PersistentQueueConfig> {
    let id = match ComponentId::parse(storage_id) {
        Ok(id) => id,
        Err(message) => {
            problems.invalid(key, message);
            return None;
        }
    };
    if !storage.defined.contains(&id) {
        problems.invalid(
            key,
            format!("extension \"{id}\" is not defined in extensions"),
        );
        return None;
    }
    if !storage.enabled.contains(&id) {
        problems.invalid(
            key,
            format!("extension \"{id}\" must also be listed in service.extensions"),
        );
        return None;
    }
    match storage.configs.get(&id) {
        Some(ExtensionConfig::FileStorage(file_storage)) => Some(PersistentQueueConfig {
            directory: file_storage.directory.join(exporter.file_name()),
            max_bytes: file_storage.max_bytes,
            fsync: file_storage.fsync,
        }),
        Some(_) => {
            problems.invalid(
                key,
                format!("extension \"{id}\" is not a file_storage extension"),
            );
            None
        }
        // Its own section was invalid and has been reported.
        None => None,
    }
}

fn client_tls(problems: &mut Problems<'_>, key: &str, raw: RawClientTls) -> ClientTlsConfig {
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        problems.invalid(
            &format!("{key}.key_file"),
            "cert_file and key_file must be set together",
        );
    }
    ClientTlsConfig {
        ca_file: raw.ca_file,
        cert_file: raw.cert_file,
        key_file: raw.key_file,
        server_name: Some(raw.server_name_override).filter(|name| !name.is_empty()),
        insecure_skip_verify: raw.insecure_skip_verify,
    }
}

fn otlp_exporter(
    problems: &mut Problems<'_>,
    key: &str,
    id: &ComponentId,
    raw: RawOtlpExporter,
    storage: &ExtensionLookup<'_>,
) -> ExporterConfig {
    let endpoint_text = raw.endpoint.clone();
    let settings = otlp_settings(problems, key, id, raw, storage);
    ExporterConfig::Otlp(settings.for_endpoint(
        problems,
        &format!("{key}.endpoint"),
        &endpoint_text,
    ))
}

/// An `otlp` exporter's settings except its endpoint: the `otlp` exporter itself, and
/// `loadbalancing`'s `protocol.otlp` applied to each backend.
struct OtlpSettings {
    /// `tls.insecure`: a bare host:port is plaintext.
    insecure: bool,
    tls: ClientTlsConfig,
    /// `endpoint` empty and `tls` unset until [`OtlpSettings::for_endpoint`].
    config: OtlpExporterConfig,
}

fn otlp_settings(
    problems: &mut Problems<'_>,
    key: &str,
    id: &ComponentId,
    raw: RawOtlpExporter,
    storage: &ExtensionLookup<'_>,
) -> OtlpSettings {
    OtlpSettings {
        insecure: raw.tls.insecure,
        tls: client_tls(problems, &format!("{key}.tls"), raw.tls),
        config: OtlpExporterConfig {
            endpoint: String::new(),
            tls: None,
            compression: compression(problems, &format!("{key}.compression"), &raw.compression),
            headers: headers(raw.headers),
            auth: exporter_auth(
                problems,
                &format!("{key}.auth.authenticator"),
                raw.auth.as_ref(),
                storage,
            ),
            timeout: positive_duration(problems, &format!("{key}.timeout"), raw.timeout),
            retry: retry(
                problems,
                &format!("{key}.retry_on_failure"),
                raw.retry_on_failure,
            ),
            queue: queue(
                problems,
                &format!("{key}.sending_queue"),
                id,
                raw.sending_queue,
                storage,
            ),
        },
    }
}

impl OtlpSettings {
    /// The exporter for `text` (reported under `endpoint_key` when invalid).
    fn for_endpoint(
        &self,
        problems: &mut Problems<'_>,
        endpoint_key: &str,
        text: &str,
    ) -> OtlpExporterConfig {
        let endpoint_text = text.trim().trim_start_matches("dns:///");
        // As in the OpenTelemetry Collector: an explicit http:// means plaintext, https://
        // means TLS, and a bare host:port follows tls.insecure.
        let (endpoint, plaintext) = if endpoint_text.is_empty() {
            problems.invalid(
                endpoint_key,
                "is required (host:port of the OTLP/gRPC server)",
            );
            (String::new(), true)
        } else if endpoint_text.starts_with("http://") {
            (endpoint_text.to_owned(), true)
        } else if endpoint_text.starts_with("https://") {
            (endpoint_text.to_owned(), false)
        } else if self.insecure {
            (format!("http://{endpoint_text}"), true)
        } else {
            (format!("https://{endpoint_text}"), false)
        };
        if !endpoint.is_empty() {
            let valid = endpoint.parse::<http::Uri>().ok().is_some_and(|uri| {
                uri.host().is_some_and(|host| !host.is_empty()) && uri.port().is_some()
            });
            if !valid {
                problems.invalid(
                    endpoint_key,
                    format!("expected host:port like backend.example.com:4317, got {text:?}"),
                );
            }
        }
        OtlpExporterConfig {
            endpoint,
            tls: (!plaintext).then(|| self.tls.clone()),
            ..self.config.clone()
        }
    }
}

/// The backends' port when a hostname has none, as in the OpenTelemetry Collector.
const LOADBALANCING_DEFAULT_PORT: u16 = 4317;

fn loadbalancing_exporter(
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
    key: &str,
    id: &ComponentId,
    raw: RawLoadBalancingExporter,
    storage: &ExtensionLookup<'_>,
) -> ExporterConfig {
    let routing_key = match raw.routing_key.as_str() {
        "traceID" | "" => RoutingKey::TraceId,
        "service" => RoutingKey::Service,
        other => {
            problems.invalid(
                &format!("{key}.routing_key"),
                format!(
                    "unsupported routing_key {other:?} (supported for traces: traceID, service)"
                ),
            );
            RoutingKey::TraceId
        }
    };
    let protocol_key = format!("{key}.protocol.otlp");
    if !raw.protocol.otlp.endpoint.trim().is_empty() {
        warnings.push(format!(
            "{protocol_key}.endpoint is ignored: the backends come from {key}.resolver"
        ));
    }
    let settings = otlp_settings(problems, &protocol_key, id, raw.protocol.otlp, storage);

    let resolver_key = format!("{key}.resolver");
    let mut unsupported_resolver = false;
    for (name, configured) in [
        ("k8s", raw.resolver.k8s.is_some()),
        ("aws_cloud_map", raw.resolver.aws_cloud_map.is_some()),
    ] {
        if configured {
            unsupported_resolver = true;
            problems.invalid(
                &format!("{resolver_key}.{name}"),
                format!("unsupported resolver {name:?} (supported: static, dns)"),
            );
        }
    }
    let mut hostnames: Vec<(usize, String)> = Vec::new();
    let mut dns = None;
    match (raw.resolver.static_hosts, raw.resolver.dns) {
        (Some(_), Some(_)) => {
            problems.invalid(&resolver_key, "set exactly one of static and dns, not both")
        }
        (Some(static_hosts), None) => {
            hostnames.extend(
                static_hosts
                    .hostnames
                    .into_iter()
                    .map(|hostname| hostname.trim().to_owned())
                    .enumerate(),
            );
            if hostnames.is_empty() {
                problems.invalid(
                    &format!("{resolver_key}.static.hostnames"),
                    "must list at least one backend (host or host:port)",
                );
            }
        }
        (None, Some(raw_dns)) => {
            dns = Some(dns_resolver(
                problems,
                &format!("{resolver_key}.dns"),
                raw_dns,
                &settings,
            ));
        }
        // Already reported as unsupported.
        (None, None) if unsupported_resolver => {}
        (None, None) => problems.invalid(
            &resolver_key,
            "a static resolver with hostnames or a dns resolver with a hostname is required",
        ),
    }
    // The ring places backends in sorted order (as the OpenTelemetry Collector's static
    // resolver does), so the order in the file does not matter.
    hostnames.sort_by(|a, b| a.1.cmp(&b.1));
    let mut backends: Vec<LoadBalancingBackend> = Vec::with_capacity(hostnames.len());
    for (index, hostname) in hostnames {
        let hostname_key = format!("{resolver_key}.static.hostnames[{index}]");
        if backends.iter().any(|backend| backend.hostname == hostname) {
            problems.invalid(&hostname_key, format!("{hostname:?} is listed twice"));
            continue;
        }
        let endpoint = if hostname.is_empty() || hostname.contains(':') {
            hostname.clone()
        } else {
            format!("{hostname}:{LOADBALANCING_DEFAULT_PORT}")
        };
        let mut exporter = settings.for_endpoint(problems, &hostname_key, &endpoint);
        if let Some(persistent) = &mut exporter.queue.persistent {
            persistent.directory = persistent.directory.join(file_name_safe(&hostname));
        }
        backends.push(LoadBalancingBackend { hostname, exporter });
    }
    let failover_key = format!("{key}.failover");
    let failover = raw.failover.enabled.then(|| FailoverConfig {
        unhealthy_after: positive_duration(
            problems,
            &format!("{failover_key}.unhealthy_after"),
            raw.failover.unhealthy_after,
        ),
        probe_interval: positive_duration(
            problems,
            &format!("{failover_key}.probe_interval"),
            raw.failover.probe_interval,
        ),
    });
    ExporterConfig::LoadBalancing(LoadBalancingExporterConfig {
        routing_key,
        backends,
        dns,
        failover,
    })
}

/// `resolver.dns`, with `protocol.otlp` as every backend's template.
fn dns_resolver(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawDnsResolver,
    settings: &OtlpSettings,
) -> DnsResolverConfig {
    let hostname = raw.hostname.trim().to_owned();
    if hostname.is_empty() {
        problems.invalid(
            &format!("{key}.hostname"),
            "is required (the name whose A/AAAA records are the backends)",
        );
    } else if hostname.contains(|c: char| c.is_whitespace() || c == ':' || c == '/') {
        problems.invalid(
            &format!("{key}.hostname"),
            format!("expected a host name like backends.example.com, got {hostname:?}"),
        );
    }
    let port = match &raw.port {
        None => Some(LOADBALANCING_DEFAULT_PORT),
        Some(Value::Number(number)) => number.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(Value::String(text)) => text.trim().parse::<u16>().ok(),
        Some(_) => None,
    };
    let port = match port {
        Some(port) if port > 0 => port,
        _ => {
            problems.invalid(&format!("{key}.port"), "must be a port number (1-65535)");
            LOADBALANCING_DEFAULT_PORT
        }
    };
    DnsResolverConfig {
        hostname,
        port,
        interval: positive_duration(problems, &format!("{key}.interval"), raw.interval),
        timeout: positive_duration(problems, &format!("{key}.timeout"), raw.timeout),
        backend: OtlpExporterConfig {
            tls: (!settings.insecure).then(|| settings.tls.clone()),
            ..settings.config.clone()
        },
    }
}

fn otlp_http_exporter(
    problems: &mut Problems<'_>,
    key: &str,
    id: &ComponentId,
    raw: RawOtlpHttpExporter,
    storage: &ExtensionLookup<'_>,
) -> ExporterConfig {
    let tls = client_tls(problems, &format!("{key}.tls"), raw.tls);
    let traces_url = if !raw.traces_endpoint.trim().is_empty() {
        check_url(
            problems,
            &format!("{key}.traces_endpoint"),
            raw.traces_endpoint.trim(),
        );
        raw.traces_endpoint.trim().to_owned()
    } else if raw.endpoint.trim().is_empty() {
        problems.invalid(
            &format!("{key}.endpoint"),
            "is required (base URL; /v1/traces is appended)",
        );
        String::new()
    } else {
        check_url(problems, &format!("{key}.endpoint"), raw.endpoint.trim());
        format!("{}/v1/traces", raw.endpoint.trim().trim_end_matches('/'))
    };
    if raw.encoding != "proto" {
        problems.invalid(
            &format!("{key}.encoding"),
            format!("only \"proto\" is supported, got {:?}", raw.encoding),
        );
    }
    ExporterConfig::OtlpHttp(OtlpHttpExporterConfig {
        traces_url,
        tls,
        compression: compression(problems, &format!("{key}.compression"), &raw.compression),
        headers: headers(raw.headers),
        auth: exporter_auth(
            problems,
            &format!("{key}.auth.authenticator"),
            raw.auth.as_ref(),
            storage,
        ),
        timeout: positive_duration(problems, &format!("{key}.timeout"), raw.timeout),
        retry: retry(
            problems,
            &format!("{key}.retry_on_failure"),
            raw.retry_on_failure,
        ),
        queue: queue(
            problems,
            &format!("{key}.sending_queue"),
            id,
            raw.sending_queue,
            storage,
        ),
    })
}

fn check_url(problems: &mut Problems<'_>, key: &str, text: &str) {
    let valid = text.parse::<http::Uri>().ok().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
    });
    if !valid {
        problems.invalid(
            key,
            format!("expected a URL like https://backend.example.com:4318, got {text:?}"),
        );
    }
}

fn debug_exporter(problems: &mut Problems<'_>, key: &str, raw: RawDebugExporter) -> ExporterConfig {
    let verbosity = match raw.verbosity.to_ascii_lowercase().as_str() {
        "basic" => Verbosity::Basic,
        "normal" => Verbosity::Normal,
        "detailed" => Verbosity::Detailed,
        other => {
            problems.invalid(
                &format!("{key}.verbosity"),
                crate::config::values::expected_one_of(&["basic", "normal", "detailed"], other),
            );
            Verbosity::Basic
        }
    };
    ExporterConfig::Debug(DebugExporterConfig {
        verbosity,
        sampling_initial: raw.sampling_initial,
        sampling_thereafter: raw.sampling_thereafter.max(1),
    })
}

// --------------------------------------------------------------- extensions

fn health_check(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawHealthCheck,
) -> Option<ExtensionConfig> {
    let endpoint = listen_endpoint(problems, &format!("{key}.endpoint"), &raw.endpoint)?;
    if !raw.path.starts_with('/') {
        problems.invalid(&format!("{key}.path"), "must start with /");
    }
    Some(ExtensionConfig::HealthCheck(HealthCheckConfig {
        endpoint,
        path: raw.path,
        tls: listener_tls(problems, key, raw.tls.as_ref()),
    }))
}

fn file_storage(
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
    key: &str,
    raw: RawFileStorage,
) -> ExtensionConfig {
    if raw.directory.as_os_str().is_empty() {
        problems.invalid(&format!("{key}.directory"), "must not be empty");
    }
    if raw.max_size.bytes() == 0 {
        problems.invalid(&format!("{key}.max_size"), "must be greater than 0");
    }
    if raw.compaction.is_some() {
        warnings.push(format!(
            "{key}.compaction is ignored: spoor's queue segments are deleted once sent and need no compaction"
        ));
    }
    ExtensionConfig::FileStorage(FileStorageConfig {
        directory: raw.directory,
        fsync: raw.fsync,
        max_bytes: raw.max_size.bytes(),
    })
}

fn bearer_token_auth(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawBearerTokenAuth,
) -> Option<ExtensionConfig> {
    for (inline, given) in [
        ("token", raw.token.is_some()),
        ("tokens", raw.tokens.is_some()),
    ] {
        if given {
            problems.invalid(&format!("{key}.{inline}"), INLINE_SECRET);
        }
    }
    let token = secret_file(
        problems,
        &format!("{key}.filename"),
        raw.filename.as_deref(),
    )?;
    let tenant = auth_tenant(problems, &format!("{key}.tenant"), raw.tenant.as_deref());
    Some(ExtensionConfig::Authenticator(AuthenticatorConfig {
        server: Some(AuthConfig {
            credentials: vec![Credential::Bearer {
                token: token.clone(),
                tenant,
            }],
        }),
        client: Some(ClientAuth::Bearer {
            scheme: raw.scheme,
            token,
        }),
    }))
}

fn basic_auth(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawBasicAuth,
) -> Option<ExtensionConfig> {
    match (raw.htpasswd, raw.client_auth) {
        (Some(_), Some(_)) => {
            problems.invalid(
                key,
                "set either htpasswd (for receivers) or client_auth (for exporters), not both",
            );
            None
        }
        (None, None) => {
            problems.invalid(
                key,
                "set htpasswd.file (for receivers) or client_auth (for exporters)",
            );
            None
        }
        (Some(htpasswd), None) => {
            if htpasswd.inline.is_some() {
                problems.invalid(&format!("{key}.htpasswd.inline"), INLINE_SECRET);
            }
            let file_key = format!("{key}.htpasswd.file");
            let text = secret_file(problems, &file_key, htpasswd.file.as_deref())?;
            let path = htpasswd.file.unwrap_or_default();
            let credentials = match parse_htpasswd(text.expose()) {
                Ok(credentials) => credentials,
                Err(message) => {
                    problems.invalid(&file_key, format!("{}: {message}", path.display()));
                    return None;
                }
            };
            Some(ExtensionConfig::Authenticator(AuthenticatorConfig {
                server: Some(AuthConfig { credentials }),
                client: None,
            }))
        }
        (None, Some(client)) => {
            if client.password.is_some() {
                problems.invalid(
                    &format!("{key}.client_auth.password"),
                    "secrets come from files only: put the password in a file and set \
                     password_file (works with systemd LoadCredential=)",
                );
            }
            if client.username.is_empty() || client.username.contains(':') {
                problems.invalid(
                    &format!("{key}.client_auth.username"),
                    "must be set and must not contain ':'",
                );
            }
            let password = secret_file(
                problems,
                &format!("{key}.client_auth.password_file"),
                client.password_file.as_deref(),
            )?;
            Some(ExtensionConfig::Authenticator(AuthenticatorConfig {
                server: None,
                client: Some(ClientAuth::Basic {
                    username: client.username,
                    password,
                }),
            }))
        }
    }
}

const INLINE_SECRET: &str = "secrets come from files only: put it in a file and set filename \
                             (works with systemd LoadCredential=)";

/// Plain-text `user:password` lines. Hashed entries are refused by line number (never by
/// content): accepting them as plain text would silently lock everyone out.
fn parse_htpasswd(text: &str) -> Result<Vec<Credential>, String> {
    let mut credentials = Vec::new();
    let mut users = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((username, password)) = line.split_once(':') else {
            return Err(format!("line {line_number}: expected user:password"));
        };
        if username.is_empty() || password.is_empty() {
            return Err(format!(
                "line {line_number}: user and password must not be empty"
            ));
        }
        let hashed = [
            "$2y$", "$2a$", "$2b$", "$apr1$", "$1$", "$5$", "$6$", "{SHA}", "{SSHA}",
        ]
        .iter()
        .any(|prefix| password.starts_with(prefix));
        if hashed {
            return Err(format!(
                "line {line_number}: hashed passwords are not supported, only plain-text \
                 user:password lines (keep the file readable by the service only)"
            ));
        }
        if !users.insert(username.to_owned()) {
            return Err(format!(
                "line {line_number}: user {username:?} is listed twice"
            ));
        }
        credentials.push(Credential::Basic {
            username: username.to_owned(),
            password: Secret::from_text(password),
            tenant: None,
        });
    }
    if credentials.is_empty() {
        return Err("no user:password lines".to_owned());
    }
    Ok(credentials)
}

fn secret_file(
    problems: &mut Problems<'_>,
    key: &str,
    path: Option<&std::path::Path>,
) -> Option<Secret> {
    match Secret::from_config(path, "spoor-collector.service") {
        Ok(secret) => Some(secret),
        Err(message) => {
            problems.invalid(key, message);
            None
        }
    }
}

fn auth_tenant(problems: &mut Problems<'_>, key: &str, tenant: Option<&str>) -> Option<TenantId> {
    let name = tenant?;
    match TenantId::new(name) {
        Ok(tenant) => Some(tenant),
        Err(error) => {
            problems.invalid(key, error.to_string());
            None
        }
    }
}

/// The authenticator `reference` names, checked like `sending_queue.storage`: defined,
/// listed in `service.extensions`, and an auth extension.
fn authenticator<'a>(
    problems: &mut Problems<'_>,
    key: &str,
    reference: &RawAuthReference,
    extensions: &'a ExtensionLookup<'_>,
) -> Option<&'a AuthenticatorConfig> {
    let id = match ComponentId::parse(&reference.authenticator) {
        Ok(id) => id,
        Err(message) => {
            problems.invalid(key, message);
            return None;
        }
    };
    if !extensions.defined.contains(&id) {
        problems.invalid(
            key,
            format!("extension \"{id}\" is not defined in extensions"),
        );
        return None;
    }
    if !extensions.enabled.contains(&id) {
        problems.invalid(
            key,
            format!("extension \"{id}\" must also be listed in service.extensions"),
        );
        return None;
    }
    match extensions.configs.get(&id) {
        Some(ExtensionConfig::Authenticator(config)) => Some(config),
        Some(_) => {
            problems.invalid(
                key,
                format!(
                    "extension \"{id}\" is not an authenticator (bearertokenauth or basicauth)"
                ),
            );
            None
        }
        // Its own section was invalid and has been reported.
        None => None,
    }
}

fn receiver_auth(
    problems: &mut Problems<'_>,
    key: &str,
    reference: Option<&RawAuthReference>,
    extensions: &ExtensionLookup<'_>,
) -> AuthConfig {
    let Some(config) =
        reference.and_then(|reference| authenticator(problems, key, reference, extensions))
    else {
        return AuthConfig::default();
    };
    match &config.server {
        Some(server) => server.clone(),
        None => {
            problems.invalid(
                key,
                "this basicauth extension has only client_auth; a receiver needs htpasswd",
            );
            AuthConfig::default()
        }
    }
}

fn exporter_auth(
    problems: &mut Problems<'_>,
    key: &str,
    reference: Option<&RawAuthReference>,
    extensions: &ExtensionLookup<'_>,
) -> Option<ClientAuth> {
    let config = authenticator(problems, key, reference?, extensions)?;
    if config.client.is_none() {
        problems.invalid(
            key,
            "this basicauth extension has only htpasswd; an exporter needs client_auth",
        );
    }
    config.client.clone()
}

// ------------------------------------------------------------------ service

fn pipelines(
    problems: &mut Problems<'_>,
    raw: &RawCollector,
    defined: &Defined,
) -> Vec<PipelineConfig> {
    let mut pipelines = Vec::new();
    for section in &raw.pipelines {
        let Some(id) = parse_id(problems, section) else {
            continue;
        };
        match id.kind() {
            "traces" => {}
            "metrics" | "logs" | "profiles" => {
                problems.invalid(
                    &section.key,
                    format!(
                        "only traces pipelines are supported (found a {} pipeline); remove it or move its data elsewhere",
                        id.kind()
                    ),
                );
                continue;
            }
            other => {
                problems.invalid(
                    &section.key,
                    format!("unknown pipeline type {other:?}: expected traces or traces/<name>"),
                );
                continue;
            }
        }
        let Some(pipeline) = read_section::<RawPipeline>(section, &raw.env_strings, problems)
        else {
            continue;
        };
        let receivers = references(
            problems,
            &section.key,
            "receivers",
            "receiver",
            &pipeline.receivers,
            &defined.receivers,
        );
        let processors = references(
            problems,
            &section.key,
            "processors",
            "processor",
            &pipeline.processors,
            &defined.processors,
        );
        let exporters = references(
            problems,
            &section.key,
            "exporters",
            "exporter",
            &pipeline.exporters,
            &defined.exporters,
        );
        if pipeline.receivers.is_empty() {
            problems.invalid(
                &format!("{}.receivers", section.key),
                "must list at least one receiver",
            );
        }
        if pipeline.exporters.is_empty() {
            problems.invalid(
                &format!("{}.exporters", section.key),
                "must list at least one exporter",
            );
        }
        pipelines.push(PipelineConfig {
            id,
            receivers,
            processors,
            exporters,
        });
    }
    pipelines
}

fn references(
    problems: &mut Problems<'_>,
    pipeline_key: &str,
    list: &str,
    what: &str,
    names: &[String],
    defined: &BTreeSet<ComponentId>,
) -> Vec<ComponentId> {
    let mut ids = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let key = format!("{pipeline_key}.{list}[{index}]");
        let id = match ComponentId::parse(name) {
            Ok(id) => id,
            Err(message) => {
                problems.invalid(&key, message);
                continue;
            }
        };
        if !defined.contains(&id) {
            problems.invalid(&key, format!("{what} \"{id}\" is not defined in {list}"));
            continue;
        }
        if ids.contains(&id) {
            problems.invalid(&key, format!("{what} \"{id}\" is listed twice"));
            continue;
        }
        ids.push(id);
    }
    ids
}

fn telemetry(problems: &mut Problems<'_>, raw: &RawCollector) -> TelemetryConfig {
    let parsed = match &raw.telemetry {
        Some(value) => super::load::read_component::<RawTelemetry>(
            "service.telemetry",
            value.clone(),
            &raw.env_strings,
            problems,
        )
        .unwrap_or_default(),
        None => RawTelemetry::default(),
    };
    let logs = log_config(problems, &parsed.logs);
    let metrics_level_key = "service.telemetry.metrics.level";
    let metrics_enabled = match parsed.metrics.level.to_ascii_lowercase().as_str() {
        "none" => false,
        "basic" | "normal" | "detailed" => true,
        other => {
            problems.invalid(
                metrics_level_key,
                crate::config::values::expected_one_of(
                    &["none", "basic", "normal", "detailed"],
                    other,
                ),
            );
            true
        }
    };
    let from_readers: Vec<String> = parsed
        .metrics
        .readers
        .iter()
        .filter_map(|reader| reader.pull.as_ref())
        .filter_map(|pull| pull.exporter.prometheus.as_ref())
        .map(|prometheus| format!("{}:{}", prometheus.host, prometheus.port))
        .collect();
    if parsed.metrics.readers.len() > from_readers.len() {
        problems.invalid(
            "service.telemetry.metrics.readers",
            "only pull readers with a prometheus exporter are supported",
        );
    }
    if from_readers.len() > 1 || (parsed.metrics.address.is_some() && !from_readers.is_empty()) {
        problems.invalid(
            "service.telemetry.metrics",
            "set one Prometheus endpoint: either address or a single reader",
        );
    }
    let address_text = parsed
        .metrics
        .address
        .clone()
        .or_else(|| from_readers.first().cloned())
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let address = listen_endpoint(problems, "service.telemetry.metrics.address", &address_text);
    let metrics_tls = listener_tls(
        problems,
        "service.telemetry.metrics",
        parsed.metrics.tls.as_ref(),
    );
    TelemetryConfig {
        logs,
        metrics_address: if metrics_enabled { address } else { None },
        metrics_tls,
    }
}

/// The OpenTelemetry Collector's log levels (`DEBUG`, `INFO`, `WARN`, `ERROR`, any case),
/// or a tracing env-filter directive (`spoor=debug,info`).
fn log_config(problems: &mut Problems<'_>, raw: &RawTelemetryLogs) -> LogConfig {
    let level = raw.level.trim().to_ascii_lowercase();
    let level = match level.as_str() {
        "warning" => "warn".to_owned(),
        "dpanic" | "panic" | "fatal" => "error".to_owned(),
        _ => level,
    };
    let is_level = ["off", "error", "warn", "info", "debug", "trace"].contains(&level.as_str());
    let is_directive = level.contains('=')
        && tracing_subscriber::EnvFilter::builder()
            .parse(&level)
            .is_ok();
    if !is_level && !is_directive {
        problems.invalid(
            "service.telemetry.logs.level",
            format!(
                "expected debug, info, warn or error (or directives like spoor=debug,info), got {:?}",
                raw.level
            ),
        );
    }
    let format = match (raw.format.as_str(), raw.encoding.as_str()) {
        ("auto", _) | ("", "console") => LogFormat::Auto,
        ("text", _) => LogFormat::Text,
        ("json", _) | ("", "json") => LogFormat::Json,
        ("journald", _) => LogFormat::Journald,
        ("", other) => {
            problems.invalid(
                "service.telemetry.logs.encoding",
                crate::config::values::expected_one_of(&["console", "json"], other),
            );
            LogFormat::Auto
        }
        (other, _) => {
            problems.invalid(
                "service.telemetry.logs.format",
                crate::config::values::expected_one_of(
                    &["auto", "text", "json", "journald"],
                    other,
                ),
            );
            LogFormat::Auto
        }
    };
    LogConfig { level, format }
}

/// Reports listeners that could not both bind: the same port on the same IP, or on a
/// wildcard IP that covers the other (port 0 asks the OS for a free port and never clashes).
fn check_distinct_listeners(
    problems: &mut Problems<'_>,
    receivers: &BTreeMap<ComponentId, ReceiverConfig>,
    extensions: &BTreeMap<ComponentId, ExtensionConfig>,
    enabled_extensions: &[ComponentId],
    telemetry: &TelemetryConfig,
) {
    let mut listeners: Vec<(String, SocketAddr)> = Vec::new();
    // UDP ports clash only with each other.
    let mut udp_listeners: Vec<(String, SocketAddr)> = Vec::new();
    for (id, receiver) in receivers {
        let otlp = match receiver {
            ReceiverConfig::Otlp(otlp) => otlp,
            ReceiverConfig::Zipkin(zipkin) => {
                listeners.push((format!("receivers.{id}.endpoint"), zipkin.endpoint));
                continue;
            }
            ReceiverConfig::Jaeger(jaeger) => {
                let prefix = format!("receivers.{id}.protocols");
                if let Some(grpc) = &jaeger.grpc {
                    listeners.push((format!("{prefix}.grpc.endpoint"), grpc.endpoint));
                }
                if let Some(http) = &jaeger.thrift_http {
                    listeners.push((format!("{prefix}.thrift_http.endpoint"), http.endpoint));
                }
                if let Some(compact) = &jaeger.thrift_compact {
                    udp_listeners.push((
                        format!("{prefix}.thrift_compact.endpoint"),
                        compact.endpoint,
                    ));
                }
                if let Some(binary) = &jaeger.thrift_binary {
                    udp_listeners
                        .push((format!("{prefix}.thrift_binary.endpoint"), binary.endpoint));
                }
                continue;
            }
        };
        if let Some(grpc) = &otlp.grpc {
            listeners.push((
                format!("receivers.{id}.protocols.grpc.endpoint"),
                grpc.endpoint,
            ));
        }
        if let Some(http) = &otlp.http {
            listeners.push((
                format!("receivers.{id}.protocols.http.endpoint"),
                http.endpoint,
            ));
        }
    }
    for id in enabled_extensions {
        if let Some(ExtensionConfig::HealthCheck(health)) = extensions.get(id) {
            listeners.push((format!("extensions.{id}.endpoint"), health.endpoint));
        }
    }
    if let Some(address) = telemetry.metrics_address {
        listeners.push(("service.telemetry.metrics.address".to_owned(), address));
    }
    for listeners in [listeners, udp_listeners] {
        for (index, (key, address)) in listeners.iter().enumerate() {
            let clash = listeners[..index]
                .iter()
                .find(|(_, earlier)| addresses_overlap(*earlier, *address));
            if let Some((earlier_key, earlier)) = clash {
                problems.invalid(
                    key,
                    format!("{address} conflicts with {earlier_key} ({earlier}): two listeners cannot share a port"),
                );
            }
        }
    }
}
