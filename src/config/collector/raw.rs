//! The collector's components as written in `collector.yaml`, before validation: one
//! struct per component type, in the OpenTelemetry Collector's key names.
//!
//! Each struct's `Default` holds the built-in defaults (serde fills absent keys from it).
//! [`RawComponent::key_schema`] returns an instance with every optional section present;
//! serialized, it is the set of keys the loader accepts, so unknown keys are reported
//! (with suggestions) before serde sees the section. Maps with free-form keys (`headers`)
//! serialize as empty mappings and are not key-checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::values::{duration, ByteSize};

/// A component's raw config: deserializable from its YAML section, and able to describe
/// the keys it accepts.
pub(crate) trait RawComponent: DeserializeOwned + Serialize {
    /// An instance with every optional section present, serialized to list known keys.
    fn key_schema() -> Self;
}

/// Accepts any YAML scalar as a string: header values such as `X-Api-Version: 2` are
/// numbers to YAML but strings to HTTP.
fn scalar_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::String(text) => Ok(text),
        serde_yaml::Value::Number(number) => Ok(number.to_string()),
        serde_yaml::Value::Bool(flag) => Ok(flag.to_string()),
        serde_yaml::Value::Null => Ok(String::new()),
        _ => Err(serde::de::Error::custom("expected a string")),
    }
}

fn scalar_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct Scalar(#[serde(deserialize_with = "scalar_string")] String);
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(key, value)| (key, value.0)).collect())
}

// ---------------------------------------------------------------- receivers

/// `tls` of a listener (the OpenTelemetry Collector's `configtls.ServerConfig`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServerTls {
    /// PEM certificate chain, the server's certificate first (required).
    pub(crate) cert_file: String,
    /// PEM private key of the certificate (required).
    pub(crate) key_file: String,
    /// PEM CA certificates; when set, clients must present a certificate signed by one
    /// of them (mutual TLS).
    pub(crate) client_ca_file: String,
    /// How often the files are checked for changes (reloaded also on SIGHUP). Unlike the
    /// OpenTelemetry Collector, where 0 (the default) never reloads, spoor always watches.
    #[serde(with = "duration")]
    pub(crate) reload_interval: Duration,
}

impl Default for RawServerTls {
    fn default() -> Self {
        RawServerTls {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            reload_interval: crate::config::DEFAULT_TLS_RELOAD_INTERVAL,
        }
    }
}

fn server_tls_schema() -> Option<RawServerTls> {
    Some(RawServerTls::default())
}

/// `receivers.otlp`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOtlpReceiver {
    /// Which transports to serve; a protocol is enabled by being present.
    pub(crate) protocols: RawOtlpProtocols,
}

/// `receivers.otlp.protocols`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOtlpProtocols {
    pub(crate) grpc: Option<RawGrpcProtocol>,
    pub(crate) http: Option<RawHttpProtocol>,
}

impl RawComponent for RawOtlpReceiver {
    fn key_schema() -> Self {
        RawOtlpReceiver {
            protocols: RawOtlpProtocols {
                grpc: Some(RawGrpcProtocol {
                    tls: server_tls_schema(),
                    auth: Some(RawAuthReference::default()),
                    ..RawGrpcProtocol::default()
                }),
                http: Some(RawHttpProtocol {
                    tls: server_tls_schema(),
                    auth: Some(RawAuthReference::default()),
                    ..RawHttpProtocol::default()
                }),
            },
        }
    }
}

/// `receivers.otlp.protocols.grpc`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawGrpcProtocol {
    pub(crate) endpoint: String,
    pub(crate) max_recv_msg_size_mib: u64,
    /// Accepted for compatibility: the tenant header always travels with the data.
    pub(crate) include_metadata: bool,
    pub(crate) transport: String,
    /// TLS; plaintext when absent.
    pub(crate) tls: Option<RawServerTls>,
    /// `auth.authenticator`: the extension that checks every request's credential.
    pub(crate) auth: Option<RawAuthReference>,
}

impl Default for RawGrpcProtocol {
    fn default() -> Self {
        RawGrpcProtocol {
            endpoint: "127.0.0.1:4317".to_owned(),
            max_recv_msg_size_mib: 4,
            include_metadata: false,
            transport: "tcp".to_owned(),
            tls: None,
            auth: None,
        }
    }
}

/// `auth:` of a receiver protocol or an exporter, as in the OpenTelemetry Collector.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAuthReference {
    /// ID of a `bearertokenauth` or `basicauth` extension listed in `service.extensions`.
    pub(crate) authenticator: String,
}

/// `receivers.otlp.protocols.http`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHttpProtocol {
    pub(crate) endpoint: String,
    pub(crate) max_request_body_size: ByteSize,
    pub(crate) include_metadata: bool,
    pub(crate) traces_url_path: String,
    /// TLS; plain HTTP when absent.
    pub(crate) tls: Option<RawServerTls>,
    pub(crate) auth: Option<RawAuthReference>,
}

impl Default for RawHttpProtocol {
    fn default() -> Self {
        RawHttpProtocol {
            endpoint: "127.0.0.1:4318".to_owned(),
            max_request_body_size: ByteSize::mib(20),
            include_metadata: false,
            traces_url_path: "/v1/traces".to_owned(),
            tls: None,
            auth: None,
        }
    }
}

/// `receivers.zipkin`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawZipkinReceiver {
    pub(crate) endpoint: String,
    pub(crate) parse_string_tags: bool,
    /// TLS; plain HTTP when absent.
    pub(crate) tls: Option<RawServerTls>,
    pub(crate) auth: Option<RawAuthReference>,
}

impl Default for RawZipkinReceiver {
    fn default() -> Self {
        RawZipkinReceiver {
            // Loopback, like the OTLP defaults: the OpenTelemetry Collector's 0.0.0.0:9411
            // would expose the appliance to the network without anyone asking for it.
            endpoint: "127.0.0.1:9411".to_owned(),
            parse_string_tags: false,
            tls: None,
            auth: None,
        }
    }
}

impl RawComponent for RawZipkinReceiver {
    fn key_schema() -> Self {
        RawZipkinReceiver {
            tls: server_tls_schema(),
            auth: Some(RawAuthReference::default()),
            ..RawZipkinReceiver::default()
        }
    }
}

/// `receivers.jaeger`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawJaegerReceiver {
    /// Which transports to serve; a protocol is enabled by being present.
    pub(crate) protocols: RawJaegerProtocols,
}

/// `receivers.jaeger.protocols`. Endpoints default per protocol (see `validate`), hence
/// `Option` here.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawJaegerProtocols {
    pub(crate) grpc: Option<RawJaegerGrpc>,
    pub(crate) thrift_http: Option<RawJaegerThriftHttp>,
    pub(crate) thrift_compact: Option<RawJaegerUdp>,
    pub(crate) thrift_binary: Option<RawJaegerUdp>,
}

/// `receivers.jaeger.protocols.grpc`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawJaegerGrpc {
    /// Default `127.0.0.1:14250`.
    pub(crate) endpoint: Option<String>,
    pub(crate) max_recv_msg_size_mib: u64,
    /// TLS; plaintext when absent.
    pub(crate) tls: Option<RawServerTls>,
    pub(crate) auth: Option<RawAuthReference>,
}

impl Default for RawJaegerGrpc {
    fn default() -> Self {
        RawJaegerGrpc {
            endpoint: None,
            max_recv_msg_size_mib: RawGrpcProtocol::default().max_recv_msg_size_mib,
            tls: None,
            auth: None,
        }
    }
}

/// `receivers.jaeger.protocols.thrift_http`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawJaegerThriftHttp {
    /// Default `127.0.0.1:14268`.
    pub(crate) endpoint: Option<String>,
    pub(crate) max_request_body_size: ByteSize,
    /// TLS; plain HTTP when absent.
    pub(crate) tls: Option<RawServerTls>,
    pub(crate) auth: Option<RawAuthReference>,
}

impl Default for RawJaegerThriftHttp {
    fn default() -> Self {
        RawJaegerThriftHttp {
            endpoint: None,
            max_request_body_size: RawHttpProtocol::default().max_request_body_size,
            tls: None,
            auth: None,
        }
    }
}

/// `receivers.jaeger.protocols.thrift_compact` / `thrift_binary` (contrib's defaults).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawJaegerUdp {
    /// Default `127.0.0.1:6831` (compact) / `127.0.0.1:6832` (binary).
    pub(crate) endpoint: Option<String>,
    /// Packets waiting to be decoded; more are dropped.
    pub(crate) queue_size: u32,
    /// Larger packets are dropped.
    pub(crate) max_packet_size: ByteSize,
    /// Tasks decoding packets.
    pub(crate) workers: u32,
    /// `SO_RCVBUF`; 0 keeps the system default.
    pub(crate) socket_buffer_size: ByteSize,
}

impl Default for RawJaegerUdp {
    fn default() -> Self {
        RawJaegerUdp {
            endpoint: None,
            queue_size: 1000,
            max_packet_size: ByteSize(65_000),
            workers: 10,
            socket_buffer_size: ByteSize(0),
        }
    }
}

impl RawComponent for RawJaegerReceiver {
    fn key_schema() -> Self {
        let udp = || RawJaegerUdp {
            endpoint: Some(String::new()),
            ..RawJaegerUdp::default()
        };
        RawJaegerReceiver {
            protocols: RawJaegerProtocols {
                grpc: Some(RawJaegerGrpc {
                    endpoint: Some(String::new()),
                    tls: server_tls_schema(),
                    auth: Some(RawAuthReference::default()),
                    ..RawJaegerGrpc::default()
                }),
                thrift_http: Some(RawJaegerThriftHttp {
                    endpoint: Some(String::new()),
                    tls: server_tls_schema(),
                    auth: Some(RawAuthReference::default()),
                    ..RawJaegerThriftHttp::default()
                }),
                thrift_compact: Some(udp()),
                thrift_binary: Some(udp()),
            },
        }
    }
}

// --------------------------------------------------------------- processors

/// `processors.batch`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBatch {
    pub(crate) send_batch_size: u32,
    pub(crate) send_batch_max_size: u32,
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    pub(crate) metadata_keys: Vec<String>,
    pub(crate) metadata_cardinality_limit: u32,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
        }
    }
}

impl RawComponent for RawBatch {
    fn key_schema() -> Self {
        RawBatch::default()
    }
}

/// `processors.memory_limiter`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMemoryLimiter {
    #[serde(with = "duration")]
    pub(crate) check_interval: Duration,
    pub(crate) limit_mib: u64,
    pub(crate) spike_limit_mib: u64,
    pub(crate) limit_percentage: u32,
    pub(crate) spike_limit_percentage: u32,
    /// Removed from the OpenTelemetry Collector (Go-specific); accepted and ignored.
    pub(crate) ballast_size_mib: Option<u64>,
}

impl RawComponent for RawMemoryLimiter {
    fn key_schema() -> Self {
        RawMemoryLimiter {
            ballast_size_mib: Some(0),
            ..RawMemoryLimiter::default()
        }
    }
}

// ---------------------------------------------------------------- exporters

/// `retry_on_failure` (the OpenTelemetry Collector's `configretry`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRetry {
    pub(crate) enabled: bool,
    #[serde(with = "duration")]
    pub(crate) initial_interval: Duration,
    pub(crate) randomization_factor: f64,
    pub(crate) multiplier: f64,
    #[serde(with = "duration")]
    pub(crate) max_interval: Duration,
    #[serde(with = "duration_or_zero")]
    pub(crate) max_elapsed_time: Duration,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// Durations where `0` (a bare number) means "no limit", as in Go configs.
mod duration_or_zero {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        crate::config::values::duration::serialize(value, serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::Number(number) if number.as_u64() == Some(0) => Ok(Duration::ZERO),
            serde_yaml::Value::String(text) => {
                crate::config::values::parse_duration(&text).map_err(serde::de::Error::custom)
            }
            other => Err(serde::de::Error::custom(format!(
                "expected a duration like \"10s\", \"5m\" or 0, got {}",
                super::describe_yaml(&other)
            ))),
        }
    }
}

pub(crate) fn describe_yaml(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::Null => "nothing".to_owned(),
        serde_yaml::Value::Bool(flag) => flag.to_string(),
        serde_yaml::Value::Number(number) => number.to_string(),
        serde_yaml::Value::String(text) => format!("{text:?}"),
        serde_yaml::Value::Sequence(_) => "a list".to_owned(),
        serde_yaml::Value::Mapping(_) => "a section of keys".to_owned(),
        serde_yaml::Value::Tagged(_) => "a tagged value".to_owned(),
    }
}

/// `sending_queue` (the OpenTelemetry Collector's exporterhelper queue).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawQueue {
    pub(crate) enabled: bool,
    pub(crate) num_consumers: u32,
    pub(crate) queue_size: u64,
    pub(crate) sizer: String,
    pub(crate) block_on_overflow: bool,
    pub(crate) wait_for_result: bool,
    /// The OpenTelemetry shape: the ID of a `file_storage` extension.
    pub(crate) storage: Option<String>,
    /// The spoor shape: the persistent queue configured in place.
    pub(crate) persistent: Option<RawPersistentQueue>,
}

impl Default for RawQueue {
    fn default() -> Self {
        RawQueue {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            sizer: "requests".to_owned(),
            block_on_overflow: false,
            wait_for_result: false,
            storage: None,
            persistent: None,
        }
    }
}

/// `sending_queue.persistent` (spoor-specific).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPersistentQueue {
    pub(crate) directory: PathBuf,
    pub(crate) max_size: ByteSize,
    pub(crate) fsync: bool,
}

impl Default for RawPersistentQueue {
    fn default() -> Self {
        RawPersistentQueue {
            directory: PathBuf::new(),
            max_size: ByteSize::gib(1),
            fsync: true,
        }
    }
}

/// `tls` (client side).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawClientTls {
    pub(crate) insecure: bool,
    pub(crate) insecure_skip_verify: bool,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) server_name_override: String,
}

fn tls_schema() -> RawClientTls {
    RawClientTls {
        ca_file: Some(PathBuf::new()),
        cert_file: Some(PathBuf::new()),
        key_file: Some(PathBuf::new()),
        ..RawClientTls::default()
    }
}

fn queue_schema() -> RawQueue {
    RawQueue {
        storage: Some(String::new()),
        persistent: Some(RawPersistentQueue::default()),
        ..RawQueue::default()
    }
}

/// `exporters.otlp` (OTLP over gRPC).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOtlpExporter {
    pub(crate) endpoint: String,
    pub(crate) tls: RawClientTls,
    pub(crate) compression: String,
    #[serde(deserialize_with = "scalar_string_map")]
    pub(crate) headers: BTreeMap<String, String>,
    /// `auth.authenticator`: the extension whose credential every request carries.
    pub(crate) auth: Option<RawAuthReference>,
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    pub(crate) retry_on_failure: RawRetry,
    pub(crate) sending_queue: RawQueue,
}

impl Default for RawOtlpExporter {
    fn default() -> Self {
        RawOtlpExporter {
            endpoint: String::new(),
            tls: RawClientTls::default(),
            compression: "gzip".to_owned(),
            headers: BTreeMap::new(),
            auth: None,
            timeout: Duration::from_secs(5),
            retry_on_failure: RawRetry::default(),
            sending_queue: RawQueue::default(),
        }
    }
}

impl RawComponent for RawOtlpExporter {
    fn key_schema() -> Self {
        RawOtlpExporter {
            tls: tls_schema(),
            sending_queue: queue_schema(),
            auth: Some(RawAuthReference::default()),
            ..RawOtlpExporter::default()
        }
    }
}

/// `exporters.otlphttp`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOtlpHttpExporter {
    pub(crate) endpoint: String,
    pub(crate) traces_endpoint: String,
    pub(crate) tls: RawClientTls,
    pub(crate) compression: String,
    pub(crate) encoding: String,
    #[serde(deserialize_with = "scalar_string_map")]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) auth: Option<RawAuthReference>,
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    pub(crate) retry_on_failure: RawRetry,
    pub(crate) sending_queue: RawQueue,
}

impl Default for RawOtlpHttpExporter {
    fn default() -> Self {
        RawOtlpHttpExporter {
            endpoint: String::new(),
            traces_endpoint: String::new(),
            tls: RawClientTls::default(),
            compression: "gzip".to_owned(),
            encoding: "proto".to_owned(),
            headers: BTreeMap::new(),
            auth: None,
            timeout: Duration::from_secs(30),
            retry_on_failure: RawRetry::default(),
            sending_queue: RawQueue::default(),
        }
    }
}

impl RawComponent for RawOtlpHttpExporter {
    fn key_schema() -> Self {
        RawOtlpHttpExporter {
            tls: tls_schema(),
            sending_queue: queue_schema(),
            auth: Some(RawAuthReference::default()),
            ..RawOtlpHttpExporter::default()
        }
    }
}

/// `exporters.loadbalancing` (the OpenTelemetry Collector contrib exporter).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLoadBalancingExporter {
    /// `traceID` (the default) or `service`.
    pub(crate) routing_key: String,
    /// How every backend is reached.
    pub(crate) protocol: RawLoadBalancingProtocol,
    /// Where the list of backends comes from.
    pub(crate) resolver: RawResolver,
    /// spoor-specific: route a failing backend's share to the next backends on the ring.
    pub(crate) failover: RawFailover,
}

impl Default for RawLoadBalancingExporter {
    fn default() -> Self {
        RawLoadBalancingExporter {
            routing_key: "traceID".to_owned(),
            protocol: RawLoadBalancingProtocol::default(),
            resolver: RawResolver::default(),
            failover: RawFailover::default(),
        }
    }
}

impl RawComponent for RawLoadBalancingExporter {
    fn key_schema() -> Self {
        // The resolvers spoor does not implement are free-form, so that they are
        // reported as unsupported rather than as unknown keys.
        let free_form = || Some(serde_yaml::Value::Mapping(Default::default()));
        RawLoadBalancingExporter {
            protocol: RawLoadBalancingProtocol {
                otlp: RawOtlpExporter::key_schema(),
            },
            resolver: RawResolver {
                static_hosts: Some(RawStaticResolver::default()),
                dns: Some(RawDnsResolver::default()),
                k8s: free_form(),
                aws_cloud_map: free_form(),
            },
            ..RawLoadBalancingExporter::default()
        }
    }
}

/// `exporters.loadbalancing.failover` (spoor-specific).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawFailover {
    /// Off by default: a failing backend keeps its share, as in the OpenTelemetry
    /// Collector.
    pub(crate) enabled: bool,
    /// How long every attempt to a backend must have failed before it counts as down.
    #[serde(with = "duration")]
    pub(crate) unhealthy_after: Duration,
    /// How often a backend that is down is probed with an empty export.
    #[serde(with = "duration")]
    pub(crate) probe_interval: Duration,
}

impl Default for RawFailover {
    fn default() -> Self {
        RawFailover {
            enabled: false,
            unhealthy_after: Duration::from_secs(30),
            probe_interval: Duration::from_secs(5),
        }
    }
}

/// `exporters.loadbalancing.protocol`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLoadBalancingProtocol {
    /// The `otlp` exporter's settings, applied to every backend (`endpoint` is ignored).
    pub(crate) otlp: RawOtlpExporter,
}

/// `exporters.loadbalancing.resolver`: exactly one of them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawResolver {
    /// A fixed list of backends.
    #[serde(rename = "static")]
    pub(crate) static_hosts: Option<RawStaticResolver>,
    /// The backends are the addresses a hostname resolves to, re-resolved periodically.
    pub(crate) dns: Option<RawDnsResolver>,
    /// Not supported: reported as such.
    pub(crate) k8s: Option<serde_yaml::Value>,
    /// Not supported: reported as such.
    pub(crate) aws_cloud_map: Option<serde_yaml::Value>,
}

/// `exporters.loadbalancing.resolver.static`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStaticResolver {
    /// `host[:port]` of each backend; the port defaults to 4317.
    pub(crate) hostnames: Vec<String>,
}

/// `exporters.loadbalancing.resolver.dns` (the contrib resolver's keys).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDnsResolver {
    /// The name whose A/AAAA records are the backends (required).
    pub(crate) hostname: String,
    /// The backends' port: a number or a string, as contrib accepts both; 4317 when
    /// unset.
    pub(crate) port: Option<serde_yaml::Value>,
    /// How often the hostname is resolved again.
    #[serde(with = "duration")]
    pub(crate) interval: Duration,
    /// How long one resolution may take before it counts as failed.
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
}

impl Default for RawDnsResolver {
    fn default() -> Self {
        RawDnsResolver {
            hostname: String::new(),
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        }
    }
}

/// `exporters.debug`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDebugExporter {
    pub(crate) verbosity: String,
    pub(crate) sampling_initial: u32,
    pub(crate) sampling_thereafter: u32,
    /// Accepted for compatibility: output always goes through spoor's own logs.
    pub(crate) use_internal_logger: bool,
}

impl Default for RawDebugExporter {
    fn default() -> Self {
        RawDebugExporter {
            verbosity: "basic".to_owned(),
            sampling_initial: 2,
            sampling_thereafter: 1,
            use_internal_logger: true,
        }
    }
}

impl RawComponent for RawDebugExporter {
    fn key_schema() -> Self {
        RawDebugExporter::default()
    }
}

// --------------------------------------------------------------- extensions

/// `extensions.health_check`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHealthCheck {
    pub(crate) endpoint: String,
    pub(crate) path: String,
    /// Deprecated in the OpenTelemetry Collector and never implemented there; ignored.
    pub(crate) check_collector_pipeline: Option<serde_yaml::Value>,
    /// TLS; plain HTTP when absent.
    pub(crate) tls: Option<RawServerTls>,
}

impl Default for RawHealthCheck {
    fn default() -> Self {
        RawHealthCheck {
            endpoint: "127.0.0.1:13133".to_owned(),
            path: "/".to_owned(),
            check_collector_pipeline: None,
            tls: None,
        }
    }
}

impl RawComponent for RawHealthCheck {
    fn key_schema() -> Self {
        RawHealthCheck {
            tls: server_tls_schema(),
            // An empty mapping: free-form, not key-checked.
            check_collector_pipeline: Some(serde_yaml::Value::Mapping(Default::default())),
            ..RawHealthCheck::default()
        }
    }
}

/// `extensions.file_storage`: where persistent sending queues live.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawFileStorage {
    pub(crate) directory: PathBuf,
    /// Unlike the OpenTelemetry Collector (default false), spoor syncs unless told not to.
    pub(crate) fsync: bool,
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    pub(crate) create_directory: bool,
    /// bbolt compaction settings; spoor's segment files need none. Ignored.
    pub(crate) compaction: Option<serde_yaml::Value>,
    /// Bytes on disk per exporter queue (spoor-specific).
    pub(crate) max_size: ByteSize,
}

impl Default for RawFileStorage {
    fn default() -> Self {
        RawFileStorage {
            directory: PathBuf::from("/var/lib/otelcol/file_storage"),
            fsync: true,
            timeout: Duration::from_secs(1),
            create_directory: true,
            compaction: None,
            max_size: ByteSize::gib(1),
        }
    }
}

impl RawComponent for RawFileStorage {
    fn key_schema() -> Self {
        RawFileStorage {
            compaction: Some(serde_yaml::Value::Mapping(Default::default())),
            ..RawFileStorage::default()
        }
    }
}

/// `extensions.bearertokenauth`: as a receiver's authenticator, the token it accepts; as
/// an exporter's, the token it sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBearerTokenAuth {
    /// What precedes the token in the `Authorization` header an exporter sends.
    pub(crate) scheme: String,
    /// File holding the token (read at start-up, trailing newline removed).
    pub(crate) filename: Option<PathBuf>,
    /// Refused: secrets come from files only.
    pub(crate) token: Option<serde_yaml::Value>,
    /// Refused: secrets come from files only.
    pub(crate) tokens: Option<serde_yaml::Value>,
    /// spoor: the tenant of every request a receiver accepts with this token.
    pub(crate) tenant: Option<String>,
}

impl Default for RawBearerTokenAuth {
    fn default() -> Self {
        RawBearerTokenAuth {
            scheme: "Bearer".to_owned(),
            filename: None,
            token: None,
            tokens: None,
            tenant: None,
        }
    }
}

impl RawComponent for RawBearerTokenAuth {
    fn key_schema() -> Self {
        RawBearerTokenAuth {
            filename: Some(PathBuf::new()),
            token: Some(serde_yaml::Value::Null),
            tokens: Some(serde_yaml::Value::Null),
            tenant: Some(String::new()),
            ..RawBearerTokenAuth::default()
        }
    }
}

/// `extensions.basicauth`: `htpasswd` to check receivers' requests, or `client_auth` for
/// what exporters send; not both.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBasicAuth {
    pub(crate) htpasswd: Option<RawHtpasswd>,
    pub(crate) client_auth: Option<RawBasicClientAuth>,
}

/// `extensions.basicauth.htpasswd`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHtpasswd {
    /// `user:password` lines (plain text; `#` comments and blank lines skipped).
    pub(crate) file: Option<PathBuf>,
    /// Refused: secrets come from files only.
    pub(crate) inline: Option<serde_yaml::Value>,
}

/// `extensions.basicauth.client_auth`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBasicClientAuth {
    pub(crate) username: String,
    /// spoor: file holding the password (the OpenTelemetry Collector takes it inline).
    pub(crate) password_file: Option<PathBuf>,
    /// Refused: secrets come from files only.
    pub(crate) password: Option<serde_yaml::Value>,
}

impl RawComponent for RawBasicAuth {
    fn key_schema() -> Self {
        RawBasicAuth {
            htpasswd: Some(RawHtpasswd {
                file: Some(PathBuf::new()),
                inline: Some(serde_yaml::Value::Null),
            }),
            client_auth: Some(RawBasicClientAuth {
                username: String::new(),
                password_file: Some(PathBuf::new()),
                password: Some(serde_yaml::Value::Null),
            }),
        }
    }
}

// ------------------------------------------------------------------ service

/// `service.pipelines.<id>`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPipeline {
    pub(crate) receivers: Vec<String>,
    pub(crate) processors: Vec<String>,
    pub(crate) exporters: Vec<String>,
}

impl RawComponent for RawPipeline {
    fn key_schema() -> Self {
        RawPipeline::default()
    }
}

/// `service.telemetry`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTelemetry {
    pub(crate) logs: RawTelemetryLogs,
    pub(crate) metrics: RawTelemetryMetrics,
}

impl RawComponent for RawTelemetry {
    fn key_schema() -> Self {
        RawTelemetry {
            logs: RawTelemetryLogs::default(),
            metrics: RawTelemetryMetrics {
                address: Some(String::new()),
                // One element: the schema every list element is checked against.
                readers: vec![RawMetricReader {
                    pull: Some(RawPullReader {
                        exporter: RawPullExporter {
                            prometheus: Some(RawPrometheusPull::default()),
                        },
                    }),
                }],
                tls: server_tls_schema(),
                ..RawTelemetryMetrics::default()
            },
        }
    }
}

/// `service.telemetry.logs`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTelemetryLogs {
    pub(crate) level: String,
    /// `console` or `json`, as in the OpenTelemetry Collector.
    pub(crate) encoding: String,
    /// spoor-specific: `auto`, `text`, `json` or `journald`; overrides `encoding`.
    pub(crate) format: String,
}

impl Default for RawTelemetryLogs {
    fn default() -> Self {
        RawTelemetryLogs {
            level: "info".to_owned(),
            encoding: "console".to_owned(),
            format: String::new(),
        }
    }
}

/// `service.telemetry.metrics`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTelemetryMetrics {
    pub(crate) level: String,
    /// The pre-`readers` way to set the Prometheus endpoint; still the simplest.
    pub(crate) address: Option<String>,
    /// The newer OpenTelemetry shape; only `pull.exporter.prometheus` is understood.
    pub(crate) readers: Vec<RawMetricReader>,
    /// spoor-specific: HTTPS for `/metrics`; plain HTTP when absent.
    pub(crate) tls: Option<RawServerTls>,
}

impl Default for RawTelemetryMetrics {
    fn default() -> Self {
        RawTelemetryMetrics {
            level: "normal".to_owned(),
            address: None,
            readers: Vec::new(),
            tls: None,
        }
    }
}

/// `service.telemetry.metrics.readers[]`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMetricReader {
    pub(crate) pull: Option<RawPullReader>,
}

/// `readers[].pull`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPullReader {
    pub(crate) exporter: RawPullExporter,
}

/// `readers[].pull.exporter`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPullExporter {
    pub(crate) prometheus: Option<RawPrometheusPull>,
}

/// `readers[].pull.exporter.prometheus`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPrometheusPull {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Accepted: spoor's names never carry unit or type suffixes beyond `_total`.
    pub(crate) without_units: bool,
    pub(crate) without_type_suffix: bool,
    pub(crate) without_scope_info: bool,
}

impl Default for RawPrometheusPull {
    fn default() -> Self {
        RawPrometheusPull {
            host: "127.0.0.1".to_owned(),
            port: 8888,
            without_units: false,
            without_type_suffix: false,
            without_scope_info: false,
        }
    }
}
