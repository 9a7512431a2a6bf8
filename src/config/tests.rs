//! Loader tests: layering, unknown keys, type errors, every validation rule, and that all
//! problems come back together.
//!
//! Tests that need environment variables use their own prefix (`SPOORTEST_<NAME>_`,
//! deliberately not starting with `SPOOR_`) through `load_with_env_prefix`, so they run in
//! parallel without seeing each other's variables. Only the tests of the public function
//! touch real `SPOOR_` variables, under one lock.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::load::load_with_env_prefix;
use super::*;
use crate::auth::{AuthConfig, Credential, Secret};

const MIB: u64 = 1 << 20;

fn tenant(name: &str) -> crate::tenant::TenantId {
    crate::tenant::TenantId::new(name).expect("test tenant")
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn yaml_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("create temp file");
    file.write_all(contents.as_bytes())
        .expect("write temp file");
    file
}

/// Loads `yaml` with no environment variables (an unused prefix) and no flags.
fn load_yaml(yaml: &str) -> Result<ServerConfig, ConfigErrors> {
    let file = yaml_file(yaml);
    load_with_env_prefix(
        Some(file.path()),
        "SPOORTEST_UNUSED_",
        &ServerCliOverrides::default(),
    )
}

fn load_yaml_errors(yaml: &str) -> ConfigErrors {
    match load_yaml(yaml) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors,
    }
}

/// Renders errors without the `[file /tmp/...]` origin so assertions do not depend on
/// the temp file's name.
fn messages(errors: &ConfigErrors) -> Vec<String> {
    errors
        .iter()
        .map(|error| match error {
            ConfigError::UnknownKey {
                key, suggestion, ..
            } => ConfigError::UnknownKey {
                key: key.clone(),
                suggestion: suggestion.clone(),
                origin: None,
            }
            .to_string(),
            ConfigError::InvalidValue { key, message, .. } => ConfigError::InvalidValue {
                key: key.clone(),
                message: message.clone(),
                origin: None,
            }
            .to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// Asserts that `yaml` fails with exactly `expected` (origins stripped), in order.
fn assert_errors(yaml: &str, expected: &[&str]) {
    let errors = load_yaml_errors(yaml);
    assert_eq!(messages(&errors), expected, "for:\n{yaml}");
}

/// Sets environment variables for the life of the guard.
struct EnvVars {
    names: Vec<String>,
}

impl EnvVars {
    fn set(vars: &[(&str, &str)]) -> Self {
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
        EnvVars {
            names: vars.iter().map(|(name, _)| (*name).to_owned()).collect(),
        }
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for name in &self.names {
            std::env::remove_var(name);
        }
    }
}

fn default_generator() -> GeneratorConfig {
    GeneratorConfig {
        defaults: GeneratorTenantConfig {
            enabled: true,
            service_graphs: true,
            span_metrics: true,
            max_active_series: 50_000,
        },
        per_tenant: BTreeMap::new(),
        stale_after: Duration::from_secs(900),
        ingestion_time_range_slack: Duration::from_secs(30),
        queue_size: 1024,
        service_graphs: ServiceGraphsConfig {
            wait: Duration::from_secs(10),
            max_items: 10_000,
            histogram_buckets: vec![0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8],
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
        },
        span_metrics: SpanMetricsConfig {
            histogram_buckets: vec![
                0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
                8.192, 16.384,
            ],
            dimensions: Vec::new(),
            intrinsic_service: true,
            intrinsic_span_name: true,
            intrinsic_span_kind: true,
            intrinsic_status_code: true,
            intrinsic_status_message: false,
        },
        remote_write: RemoteWriteConfig {
            endpoints: Vec::new(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            external_labels: BTreeMap::new(),
            inject_tenant_id_as: None,
        },
    }
}

fn default_config() -> ServerConfig {
    ServerConfig {
        api: ApiConfig {
            listen_address: addr("127.0.0.1:3200"),
            tls: None,
            auth: AuthConfig::default(),
        },
        otlp: OtlpReceiverConfig {
            grpc: OtlpGrpcConfig {
                listen_address: addr("127.0.0.1:4319"),
                max_recv_msg_bytes: 16 << 20,
                tls: None,
                auth: AuthConfig::default(),
            },
            http: OtlpHttpConfig {
                listen_address: addr("127.0.0.1:4320"),
                max_request_body_bytes: 16 << 20,
                tls: None,
                auth: AuthConfig::default(),
            },
        },
        ingest: IngestConfig {
            max_inflight_bytes: 64 * MIB,
            retry_after: Duration::from_secs(1),
        },
        wal: WalConfig {
            dir: PathBuf::from("./data/wal"),
            fsync: FsyncPolicy::Always,
            segment_max_bytes: 128 * MIB,
        },
        head: HeadConfig {
            trace_idle: Duration::from_secs(10),
            max_block_bytes: 128 * MIB,
            max_block_duration: Duration::from_secs(300),
        },
        storage: StorageConfig {
            backend: BackendConfig::Local {
                path: PathBuf::from("./data/blocks"),
            },
            blocklist_poll: Duration::from_secs(30),
        },
        query: QueryConfig {
            default_result_limit: 20,
            max_result_limit: 262_144,
            default_spans_per_span_set: 3,
            max_spans_per_span_set: 100,
            max_search_duration: Duration::from_secs(168 * 3600),
            max_metrics_duration: Duration::from_secs(24 * 3600),
            max_metrics_series: 1000,
            max_exemplars: 100,
            metrics_default_step: MetricsStep::Auto,
            recent_window: Duration::from_secs(3600),
            trace_merge_window: Duration::from_secs(3600),
        },
        retention: RetentionConfig {
            block_retention: Duration::from_secs(14 * 24 * 3600),
            per_tenant: BTreeMap::new(),
            interval: Duration::from_secs(300),
        },
        compaction: CompactionConfig {
            enabled: true,
            window: Duration::from_secs(3600),
            max_input_blocks: 8,
            max_block_bytes: 512 * MIB,
            cycle: Duration::from_secs(30),
            compacted_block_retention: Duration::from_secs(3600),
            lease_duration: Duration::from_secs(120),
        },
        limits: LimitsConfig {
            defaults: TenantLimits::default(),
            per_tenant: BTreeMap::new(),
        },
        metrics_generator: default_generator(),
        cluster: ClusterConfig {
            peers: Vec::new(),
            peer_timeout: Duration::from_secs(5),
            tls: None,
            auth: None,
        },
        shutdown: ShutdownConfig {
            timeout: Duration::from_secs(30),
        },
        log: LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        },
    }
}

/// Serializes the tests that read or write real `SPOOR_` variables.
static REAL_ENV_LOCK: Mutex<()> = Mutex::new(());

/// Runs `test` with no `SPOOR_` variables set, restoring any the developer had.
fn with_clean_spoor_env(test: impl FnOnce()) {
    let _guard = REAL_ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let saved: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.to_ascii_uppercase().starts_with(ENV_PREFIX))
        .collect();
    for (name, _) in &saved {
        std::env::remove_var(name);
    }
    test();
    for (name, value) in saved {
        std::env::set_var(name, value);
    }
}

#[test]
fn no_file_no_env_no_flags_gives_the_documented_defaults() {
    with_clean_spoor_env(|| {
        let config = load_server_config(None, &ServerCliOverrides::default());
        assert_eq!(config, Ok(default_config()));
    });
}

#[test]
fn real_spoor_env_vars_override_through_the_public_function() {
    with_clean_spoor_env(|| {
        let _vars = EnvVars::set(&[
            ("SPOOR_WAL__FSYNC", "never"),
            ("SPOOR_STORAGE__S3__BUCKET", "traces"),
            // Reserved for the binary's config file path; not a config key.
            ("SPOOR_CONFIG", "/etc/spoor/server.yaml"),
        ]);
        let config = load_server_config(None, &ServerCliOverrides::default()).expect("loads");
        assert_eq!(config.wal.fsync, FsyncPolicy::Never);
    });
}

#[test]
fn empty_and_comment_only_files_give_defaults() {
    for yaml in [
        "",
        "\n\n",
        "# nothing set yet\n# wal:\n#   fsync: never\n",
        "{}",
    ] {
        assert_eq!(load_yaml(yaml), Ok(default_config()), "for {yaml:?}");
    }
}

#[test]
fn sections_left_empty_give_their_defaults() {
    let yaml = "api:\nwal:\n  fsync:\nstorage:\n  s3:\n";
    assert_eq!(load_yaml(yaml), Ok(default_config()));
}

#[test]
fn yaml_overrides_every_key() {
    let yaml = r#"
api:
  listen_address: 0.0.0.0:13200
otlp:
  grpc: { listen_address: "[::1]:14319", max_recv_msg_size: 4MiB }
  http: { listen_address: 127.0.0.2:14320, max_request_body_size: 512KB }
ingest:
  max_inflight_bytes: 1GiB
  retry_after: 250ms
wal:
  path: /var/lib/spoor-server/wal
  fsync: 100ms
  segment_max_size: 64MiB
head:
  trace_idle: 30s
  max_block_size: 1.5GiB
  max_block_duration: 1h30m
storage:
  backend: s3
  local: { path: /unused }
  s3:
    bucket: traces
    endpoint: http://127.0.0.1:9000
    region: eu-west-1
    prefix: spoor/
    force_path_style: false
    allow_http: true
    access_key_id: AKIA
    secret_access_key: secret
  blocklist_poll: 1m
query:
  default_result_limit: 50
  max_result_limit: 5000
  default_spans_per_span_set: 5
  max_spans_per_span_set: 50
  max_search_duration: 24h
  max_metrics_duration: 2h
  max_metrics_series: 200
  max_exemplars: 0
  metrics_default_step: 30s
  recent_window: 15m
  trace_merge_window: 3h
retention:
  block_retention: 7d
  per_tenant:
    acme: 1d
    "team-b": 30d
  interval: 1m
compaction:
  enabled: false
  window: 2h
  max_input_blocks: 4
  max_block_size: 1GiB
  cycle: 10s
  compacted_block_retention: 0s
limits:
  ingestion_rate: 10MiB
  max_attribute_value_length: 4KiB
  max_live_traces: 5000
  max_bytes_per_trace: 5MiB
  max_concurrent_queries: 8
  per_tenant:
    acme: { ingestion_burst: 50MiB, max_attribute_value_length: 0, max_live_traces: 0, max_bytes_per_trace: 0, max_search_duration: 30d, max_result_limit: 50000 }
    free: { ingestion_rate: 1MiB, max_concurrent_queries: 1, max_search_duration: 1h }
metrics_generator:
  processors: [span-metrics]
  max_active_series: 1000
  per_tenant:
    acme: { processors: [service-graphs, span-metrics], max_active_series: 20 }
    quiet: { enabled: false }
  service_graphs:
    wait: 2s
    dimensions: [deployment.environment]
    enable_client_server_prefix: true
  span_metrics:
    histogram_buckets: [0.01, 0.1, 1]
    dimensions: [http.route]
    intrinsic_dimensions: { status_message: true }
  remote_write:
    endpoints:
      - url: http://127.0.0.1:9090/api/v1/write
        headers: { Authorization: Bearer xyz }
        send_tenant_header: false
    interval: 30s
    external_labels: { cluster: eu1 }
    inject_tenant_id_as: tenant
cluster:
  peers: [spoor-2.example:3200, 10.0.0.3:3200]
  peer_timeout: 2s
shutdown:
  timeout: 2m
log:
  level: spoor=debug,info
  format: json
"#;
    let config = load_yaml(yaml).expect("valid config");
    assert_eq!(
        config,
        ServerConfig {
            api: ApiConfig {
                listen_address: addr("0.0.0.0:13200"),
                tls: None,
                auth: AuthConfig::default(),
            },
            otlp: OtlpReceiverConfig {
                grpc: OtlpGrpcConfig {
                    listen_address: addr("[::1]:14319"),
                    max_recv_msg_bytes: 4 << 20,
                    tls: None,
                    auth: AuthConfig::default(),
                },
                http: OtlpHttpConfig {
                    listen_address: addr("127.0.0.2:14320"),
                    max_request_body_bytes: 512_000,
                    tls: None,
                    auth: AuthConfig::default(),
                },
            },
            ingest: IngestConfig {
                max_inflight_bytes: 1024 * MIB,
                retry_after: Duration::from_millis(250),
            },
            wal: WalConfig {
                dir: PathBuf::from("/var/lib/spoor-server/wal"),
                fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
                segment_max_bytes: 64 * MIB,
            },
            head: HeadConfig {
                trace_idle: Duration::from_secs(30),
                max_block_bytes: 1536 * MIB,
                max_block_duration: Duration::from_secs(5400),
            },
            storage: StorageConfig {
                backend: BackendConfig::S3(S3Config {
                    bucket: "traces".to_owned(),
                    endpoint: Some("http://127.0.0.1:9000".to_owned()),
                    region: "eu-west-1".to_owned(),
                    prefix: "spoor/".to_owned(),
                    force_path_style: false,
                    allow_http: true,
                    access_key_id: Some("AKIA".to_owned()),
                    secret_access_key: Some("secret".to_owned()),
                }),
                blocklist_poll: Duration::from_secs(60),
            },
            query: QueryConfig {
                default_result_limit: 50,
                max_result_limit: 5000,
                default_spans_per_span_set: 5,
                max_spans_per_span_set: 50,
                max_search_duration: Duration::from_secs(24 * 3600),
                max_metrics_duration: Duration::from_secs(2 * 3600),
                max_metrics_series: 200,
                max_exemplars: 0,
                metrics_default_step: MetricsStep::Fixed(Duration::from_secs(30)),
                recent_window: Duration::from_secs(900),
                trace_merge_window: Duration::from_secs(3 * 3600),
            },
            retention: RetentionConfig {
                block_retention: Duration::from_secs(7 * 24 * 3600),
                per_tenant: BTreeMap::from([
                    (tenant("acme"), Duration::from_secs(24 * 3600)),
                    (tenant("team-b"), Duration::from_secs(30 * 24 * 3600)),
                ]),
                interval: Duration::from_secs(60),
            },
            compaction: CompactionConfig {
                enabled: false,
                window: Duration::from_secs(2 * 3600),
                max_input_blocks: 4,
                max_block_bytes: 1024 * MIB,
                cycle: Duration::from_secs(10),
                compacted_block_retention: Duration::ZERO,
                lease_duration: Duration::from_secs(120),
            },
            limits: LimitsConfig {
                defaults: TenantLimits {
                    ingestion_rate: Some(10 * MIB),
                    ingestion_burst: 10 * MIB,
                    max_attribute_value_length: Some(4096),
                    max_live_traces: Some(5000),
                    max_bytes_per_trace: Some(5 * MIB as usize),
                    max_concurrent_queries: Some(8),
                    max_search_duration: None,
                    max_result_limit: None,
                },
                per_tenant: BTreeMap::from([
                    (
                        tenant("acme"),
                        TenantLimits {
                            ingestion_rate: Some(10 * MIB),
                            ingestion_burst: 50 * MIB,
                            max_attribute_value_length: None,
                            max_live_traces: None,
                            max_bytes_per_trace: None,
                            max_concurrent_queries: Some(8),
                            max_search_duration: Some(Duration::from_secs(30 * 24 * 3600)),
                            max_result_limit: Some(50_000),
                        },
                    ),
                    (
                        tenant("free"),
                        TenantLimits {
                            ingestion_rate: Some(MIB),
                            ingestion_burst: MIB,
                            max_attribute_value_length: Some(4096),
                            max_live_traces: Some(5000),
                            max_bytes_per_trace: Some(5 * MIB as usize),
                            max_concurrent_queries: Some(1),
                            max_search_duration: Some(Duration::from_secs(3600)),
                            max_result_limit: None,
                        },
                    ),
                ]),
            },
            metrics_generator: {
                let mut generator = default_generator();
                generator.defaults.service_graphs = false;
                generator.defaults.max_active_series = 1000;
                let acme = GeneratorTenantConfig {
                    service_graphs: true,
                    max_active_series: 20,
                    ..generator.defaults.clone()
                };
                let quiet = GeneratorTenantConfig {
                    enabled: false,
                    ..generator.defaults.clone()
                };
                generator.per_tenant =
                    BTreeMap::from([(tenant("acme"), acme), (tenant("quiet"), quiet)]);
                generator.service_graphs.wait = Duration::from_secs(2);
                generator.service_graphs.dimensions = vec!["deployment.environment".to_owned()];
                generator.service_graphs.enable_client_server_prefix = true;
                generator.span_metrics.histogram_buckets = vec![0.01, 0.1, 1.0];
                generator.span_metrics.dimensions = vec!["http.route".to_owned()];
                generator.span_metrics.intrinsic_status_message = true;
                generator.remote_write = RemoteWriteConfig {
                    endpoints: vec![RemoteWriteEndpoint {
                        url: "http://127.0.0.1:9090/api/v1/write".to_owned(),
                        headers: vec![("Authorization".to_owned(), "Bearer xyz".to_owned())],
                        send_tenant_header: false,
                    }],
                    interval: Duration::from_secs(30),
                    timeout: Duration::from_secs(10),
                    external_labels: BTreeMap::from([("cluster".to_owned(), "eu1".to_owned())]),
                    inject_tenant_id_as: Some("tenant".to_owned()),
                };
                generator
            },
            cluster: ClusterConfig {
                peers: vec![
                    "spoor-2.example:3200".to_owned(),
                    "10.0.0.3:3200".to_owned()
                ],
                peer_timeout: Duration::from_secs(2),
                tls: None,
                auth: None,
            },
            shutdown: ShutdownConfig {
                timeout: Duration::from_secs(120),
            },
            log: LogConfig {
                level: "spoor=debug,info".to_owned(),
                format: LogFormat::Json,
            },
        }
    );
}

#[test]
fn env_vars_override_nested_keys_split_on_double_underscore() {
    let prefix = "SPOORTEST_NESTING_";
    let _vars = EnvVars::set(&[
        ("SPOORTEST_NESTING_WAL__FSYNC", "never"),
        ("SPOORTEST_NESTING_STORAGE__BACKEND", "s3"),
        // Must stay the string "007", not become the number 7.
        ("SPOORTEST_NESTING_STORAGE__S3__BUCKET", "007"),
        ("SPOORTEST_NESTING_STORAGE__S3__ALLOW_HTTP", "true"),
        (
            "SPOORTEST_NESTING_STORAGE__S3__ENDPOINT",
            "http://127.0.0.1:9000",
        ),
        ("SPOORTEST_NESTING_OTLP__GRPC__MAX_RECV_MSG_SIZE", "1048576"),
        ("SPOORTEST_NESTING_HEAD__TRACE_IDLE", "1m"),
    ]);
    let config =
        load_with_env_prefix(None, prefix, &ServerCliOverrides::default()).expect("valid config");
    assert_eq!(config.wal.fsync, FsyncPolicy::Never);
    assert_eq!(config.otlp.grpc.max_recv_msg_bytes, 1 << 20);
    assert_eq!(config.head.trace_idle, Duration::from_secs(60));
    let BackendConfig::S3(s3) = config.storage.backend else {
        panic!("expected s3, got {:?}", config.storage.backend);
    };
    assert_eq!(s3.bucket, "007");
    assert!(s3.allow_http);
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
}

#[test]
fn flags_beat_env_which_beats_the_file() {
    let prefix = "SPOORTEST_PRECEDENCE_";
    let file = yaml_file(
        "api: { listen_address: 127.0.0.1:1001 }\n\
         otlp: { grpc: { listen_address: 127.0.0.1:1002 }, http: { listen_address: 127.0.0.1:1003 } }\n\
         log: { level: warn }\n",
    );
    let _vars = EnvVars::set(&[
        ("SPOORTEST_PRECEDENCE_API__LISTEN_ADDRESS", "127.0.0.1:2001"),
        (
            "SPOORTEST_PRECEDENCE_OTLP__GRPC__LISTEN_ADDRESS",
            "127.0.0.1:2002",
        ),
        ("SPOORTEST_PRECEDENCE_WAL__PATH", "/from/env/wal"),
    ]);
    let cli = ServerCliOverrides {
        api_listen_address: Some("127.0.0.1:3001".to_owned()),
        data_dir: Some(PathBuf::from("/from/flag")),
        log_format: Some("text".to_owned()),
        ..ServerCliOverrides::default()
    };
    let config = load_with_env_prefix(Some(file.path()), prefix, &cli).expect("valid config");
    // Flag over env over file.
    assert_eq!(config.api.listen_address, addr("127.0.0.1:3001"));
    assert_eq!(config.wal.dir, PathBuf::from("/from/flag/wal"));
    // Env over file.
    assert_eq!(config.otlp.grpc.listen_address, addr("127.0.0.1:2002"));
    // File over defaults.
    assert_eq!(config.otlp.http.listen_address, addr("127.0.0.1:1003"));
    assert_eq!(config.log.level, "warn");
    // Flag over defaults.
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(
        config.storage.backend,
        BackendConfig::Local {
            path: PathBuf::from("/from/flag/blocks")
        }
    );

    let config = load_with_env_prefix(Some(file.path()), prefix, &ServerCliOverrides::default())
        .expect("valid config");
    assert_eq!(config.api.listen_address, addr("127.0.0.1:2001"));
    assert_eq!(config.wal.dir, PathBuf::from("/from/env/wal"));
}

#[test]
fn all_cli_overrides_apply() {
    let cli = ServerCliOverrides {
        api_listen_address: Some("0.0.0.0:3200".to_owned()),
        otlp_grpc_listen_address: Some("0.0.0.0:4319".to_owned()),
        otlp_http_listen_address: Some("0.0.0.0:4320".to_owned()),
        data_dir: Some(PathBuf::from("/srv/spoor")),
        log_level: Some("debug".to_owned()),
        log_format: Some("journald".to_owned()),
    };
    let config = load_with_env_prefix(None, "SPOORTEST_UNUSED_", &cli).expect("valid config");
    assert_eq!(config.api.listen_address, addr("0.0.0.0:3200"));
    assert_eq!(config.otlp.grpc.listen_address, addr("0.0.0.0:4319"));
    assert_eq!(config.otlp.http.listen_address, addr("0.0.0.0:4320"));
    assert_eq!(config.wal.dir, PathBuf::from("/srv/spoor/wal"));
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.log.format, LogFormat::Journald);
}

#[test]
fn unknown_keys_are_all_reported_with_suggestions() {
    let yaml = r#"
bogus: 1
otlp:
  grpc:
    listen_addres: 127.0.0.1:4319
    max_recv_msg_bytes: 4MiB
wal:
  trace_idle: 5s
  fsink: never
storage:
  s4: {}
  local: { path: ./blocks, extra: { deeper: 1 } }
Log:
  level: debug
"#;
    assert_errors(
        yaml,
        &[
            "Log: unknown key (did you mean log?)",
            "bogus: unknown key",
            "otlp.grpc.listen_addres: unknown key (did you mean listen_address?)",
            "otlp.grpc.max_recv_msg_bytes: unknown key (did you mean max_recv_msg_size?)",
            "storage.local.extra: unknown key",
            "storage.s4: unknown key (did you mean s3?)",
            "wal.fsink: unknown key (did you mean fsync?)",
            "wal.trace_idle: unknown key (did you mean head.trace_idle?)",
        ],
    );
}

#[test]
fn unknown_env_vars_name_the_variable_and_the_correct_spelling() {
    let prefix = "SPOORTEST_UNKNOWN_ENV_";
    let _vars = EnvVars::set(&[
        ("SPOORTEST_UNKNOWN_ENV_WAL_FSYNC", "never"),
        (
            "SPOORTEST_UNKNOWN_ENV_OTLP__GRPC_LISTEN_ADDRESS",
            "127.0.0.1:1",
        ),
        ("SPOORTEST_UNKNOWN_ENV_WALL__FSYNC", "never"),
    ]);
    let errors = load_with_env_prefix(None, prefix, &ServerCliOverrides::default())
        .expect_err("unknown keys");
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "otlp.grpc_listen_address: unknown key (did you mean \
             SPOORTEST_UNKNOWN_ENV_OTLP__GRPC__LISTEN_ADDRESS?) \
             [environment variable SPOORTEST_UNKNOWN_ENV_OTLP__GRPC_LISTEN_ADDRESS]",
            "wal_fsync: unknown key (did you mean SPOORTEST_UNKNOWN_ENV_WAL__FSYNC?) \
             [environment variable SPOORTEST_UNKNOWN_ENV_WAL_FSYNC]",
            "wall: unknown key (did you mean SPOORTEST_UNKNOWN_ENV_WAL__FSYNC?) \
             [environment variable SPOORTEST_UNKNOWN_ENV_WALL__FSYNC]",
        ]
    );
}

#[test]
fn bad_types_are_all_reported() {
    let yaml = r#"
api: 5
otlp:
  grpc: { max_recv_msg_size: lots }
  http: { max_request_body_size: -1 }
wal:
  fsync: sometimes
  path: [a, b]
head:
  trace_idle: 10
storage:
  backend: s4
  s3: { force_path_style: yes, bucket: 7 }
log:
  format: xml
"#;
    assert_errors(
        yaml,
        &[
            "api: expected a section of keys, got 5",
            "head.trace_idle: expected a duration like \"10s\", \"5m\" or \"1h30m\", got 10",
            "log.format: expected \"auto\", \"text\", \"json\" or \"journald\", got \"xml\"",
            "otlp.grpc.max_recv_msg_size: expected a size like \"16MiB\", \"512KB\" or a number \
             of bytes, got \"lots\"",
            "otlp.http.max_request_body_size: expected a size like \"16MiB\", \"512KB\" or a \
             number of bytes, got -1",
            "storage.backend: expected \"local\" or \"s3\", got \"s4\"",
            "storage.s3.bucket: expected a string, got 7",
            "storage.s3.force_path_style: expected a boolean, got \"yes\"",
            "wal.fsync: expected \"always\", \"never\" or a duration, got \"sometimes\"",
            "wal.path: expected a path, got a list",
        ],
    );
}

#[test]
fn choices_are_names_not_variant_numbers() {
    assert_errors(
        "storage: { backend: 1 }\nlog: { format: 2 }",
        &[
            "log.format: expected a string, got 2",
            "storage.backend: expected a string, got 1",
        ],
    );
}

#[test]
fn zero_sizes_and_durations_are_rejected() {
    let yaml = r#"
otlp:
  grpc: { max_recv_msg_size: 0 }
  http: { max_request_body_size: 0B }
ingest: { max_inflight_bytes: 0, retry_after: 0s }
wal: { fsync: 0s, segment_max_size: 0 }
head: { trace_idle: 0s, max_block_size: 0KiB, max_block_duration: 0ms }
storage: { blocklist_poll: 0s }
retention: { block_retention: 0s, interval: 0s }
compaction: { window: 0s, max_block_size: 0, cycle: 0s }
shutdown: { timeout: 0s }
"#;
    assert_errors(
        yaml,
        &[
            "otlp.grpc.max_recv_msg_size: must be greater than 0",
            "otlp.http.max_request_body_size: must be greater than 0",
            "ingest.max_inflight_bytes: must be greater than 0",
            "ingest.retry_after: must be greater than 0",
            "wal.fsync: interval must be greater than 0 (use \"always\" to fsync before every \
             acknowledgement)",
            "wal.segment_max_size: must be greater than 0",
            "head.trace_idle: must be greater than 0",
            "head.max_block_size: must be greater than 0",
            "head.max_block_duration: must be greater than 0",
            "storage.blocklist_poll: must be greater than 0",
            "retention.block_retention: must be greater than 0",
            "retention.interval: must be greater than 0",
            "compaction.window: must be greater than 0",
            "compaction.max_block_size: must be greater than 0",
            "compaction.cycle: must be greater than 0",
            "shutdown.timeout: must be greater than 0",
        ],
    );
}

#[test]
fn query_limits_must_be_positive_and_defaults_within_maxima() {
    assert_errors(
        "query: { max_result_limit: 0, max_spans_per_span_set: 0, max_search_duration: 0s, \
         max_metrics_series: 0, metrics_default_step: 0s, recent_window: 0s }",
        &[
            "query.max_result_limit: must be greater than 0",
            "query.max_spans_per_span_set: must be greater than 0",
            "query.metrics_default_step: must be greater than 0 (use \"auto\" to derive it \
             from the range)",
            "query.max_search_duration: must be greater than 0",
            "query.max_metrics_series: must be greater than 0",
            "query.recent_window: must be greater than 0",
        ],
    );
    assert_errors(
        "query: { metrics_default_step: sometimes }",
        &["query.metrics_default_step: expected \"auto\" or a duration, got \"sometimes\""],
    );
    assert_errors(
        "query: { default_result_limit: 30, max_result_limit: 10, \
         default_spans_per_span_set: 7, max_spans_per_span_set: 5 }",
        &[
            "query.default_result_limit: 30 is larger than query.max_result_limit (10)",
            "query.default_spans_per_span_set: 7 is larger than query.max_spans_per_span_set (5)",
        ],
    );
}

#[test]
fn request_sizes_are_capped_and_must_fit_the_inflight_budget() {
    assert_errors(
        "otlp: { http: { max_request_body_size: 1025MiB }, grpc: { max_recv_msg_size: 2GiB } }\n\
         ingest: { max_inflight_bytes: 4GiB }",
        &[
            "otlp.grpc.max_recv_msg_size: 2GiB is larger than the maximum of 1GiB",
            "otlp.http.max_request_body_size: 1025MiB is larger than the maximum of 1GiB",
        ],
    );
    assert_errors(
        "otlp: { http: { max_request_body_size: 64MiB } }\ningest: { max_inflight_bytes: 32MiB }",
        &[
            "ingest.max_inflight_bytes: 32MiB is smaller than the largest accepted request \
           (64MiB, from otlp.grpc.max_recv_msg_size / otlp.http.max_request_body_size)",
        ],
    );
    // Exactly at the limits is fine.
    let config = load_yaml(
        "otlp: { http: { max_request_body_size: 1GiB } }\ningest: { max_inflight_bytes: 1GiB }",
    )
    .expect("limits are inclusive");
    assert_eq!(config.otlp.http.max_request_body_bytes, 1 << 30);
}

#[test]
fn listen_addresses_must_parse_and_be_distinct() {
    assert_errors(
        "api: { listen_address: localhost:3200 }\notlp: { grpc: { listen_address: 127.0.0.1 } }",
        &[
            "api.listen_address: expected an IP address and port like 127.0.0.1:3200 or \
             [::1]:3200 (host names are not resolved), got \"localhost:3200\"",
            "otlp.grpc.listen_address: expected an IP address and port like 127.0.0.1:3200 or \
             [::1]:3200 (host names are not resolved), got \"127.0.0.1\"",
        ],
    );
    assert_errors(
        "api: { listen_address: 0.0.0.0:4000 }\n\
         otlp: { grpc: { listen_address: 127.0.0.1:4000 }, http: { listen_address: 127.0.0.1:4000 } }",
        &[
            "otlp.grpc.listen_address: 127.0.0.1:4000 conflicts with api.listen_address \
             (0.0.0.0:4000): two listeners cannot share a port",
            "otlp.http.listen_address: 127.0.0.1:4000 conflicts with api.listen_address \
             (0.0.0.0:4000): two listeners cannot share a port",
        ],
    );
    // Port 0 asks the OS for a free port: what integration tests use for all three.
    let config = load_yaml(
        "api: { listen_address: 127.0.0.1:0 }\n\
         otlp: { grpc: { listen_address: 127.0.0.1:0 }, http: { listen_address: 127.0.0.1:0 } }",
    )
    .expect("ephemeral ports never clash");
    assert_eq!(config.api.listen_address, addr("127.0.0.1:0"));
}

#[test]
fn s3_backend_rules() {
    assert_errors(
        "storage: { backend: s3, s3: { region: '' } }",
        &[
            "storage.s3.bucket: required when storage.backend is s3",
            "storage.s3.region: required when storage.backend is s3",
        ],
    );
    assert_errors(
        "storage: { backend: s3, s3: { bucket: b, endpoint: 'minio:9000', access_key_id: k } }",
        &[
            "storage.s3.endpoint: expected a URL like http://127.0.0.1:9000 or \
             https://s3.example.com, got \"minio:9000\"",
            "storage.s3.secret_access_key: required when storage.s3.access_key_id is set",
        ],
    );
    assert_errors(
        "storage: { backend: s3, s3: { bucket: b, endpoint: 'http://minio:9000', secret_access_key: s } }",
        &[
            "storage.s3.endpoint: a plain http:// endpoint needs storage.s3.allow_http: true",
            "storage.s3.access_key_id: required when storage.s3.secret_access_key is set",
        ],
    );
    // The s3 section is not checked while the backend is local.
    assert_eq!(
        load_yaml("storage: { s3: { endpoint: 'not a url', region: '' } }"),
        Ok(default_config())
    );
    let config = load_yaml(
        "storage: { backend: s3, s3: { bucket: traces, endpoint: 'https://s3.example.com' } }",
    )
    .expect("valid s3 config");
    assert_eq!(
        config.storage.backend,
        BackendConfig::S3(S3Config {
            bucket: "traces".to_owned(),
            endpoint: Some("https://s3.example.com".to_owned()),
            region: "us-east-1".to_owned(),
            prefix: String::new(),
            force_path_style: true,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
        })
    );
}

#[test]
fn paths_must_not_be_empty() {
    assert_errors(
        "wal: { path: '' }\nstorage: { local: { path: '' } }",
        &[
            "wal.path: must not be empty",
            "storage.local.path: must not be empty",
        ],
    );
}

#[test]
fn log_level_must_be_an_env_filter_and_format_one_of_four() {
    assert_errors(
        "log: { level: warning }",
        &[
            "log.level: \"warning\" is not a level (use one of off, error, warn, info, debug or \
           trace, or target=level directives like spoor=debug,info)",
        ],
    );
    let errors = load_yaml_errors("log: { level: 'spoor=loud' }");
    assert_eq!(errors.errors().len(), 1);
    assert!(
        messages(&errors)[0].starts_with("log.level: \"spoor=loud\" is not a valid log filter"),
        "{errors}"
    );
    for format in ["auto", "text", "json", "journald"] {
        assert!(
            load_yaml(&format!("log: {{ format: {format} }}")).is_ok(),
            "{format}"
        );
    }
}

#[test]
fn every_kind_of_error_comes_back_together_one_per_line() {
    let yaml = r#"
otlp:
  grpc:
    listen_addres: 127.0.0.1:4319
wal:
  fsync: sometimes
head:
  max_block_size: 0
storage:
  backend: s3
log:
  level: loud
"#;
    let file = yaml_file(yaml);
    let errors = load_with_env_prefix(
        Some(file.path()),
        "SPOORTEST_UNUSED_",
        &ServerCliOverrides {
            api_listen_address: Some("nowhere".to_owned()),
            ..ServerCliOverrides::default()
        },
    )
    .expect_err("five problems");
    let origin = format!("[file {}]", file.path().display());
    let expected = [
        format!("otlp.grpc.listen_addres: unknown key (did you mean listen_address?) {origin}"),
        format!(
            "wal.fsync: expected \"always\", \"never\" or a duration, got \"sometimes\" {origin}"
        ),
        "api.listen_address: expected an IP address and port like 127.0.0.1:3200 or [::1]:3200 \
         (host names are not resolved), got \"nowhere\" [command line]"
            .to_owned(),
        format!("head.max_block_size: must be greater than 0 {origin}"),
        // Cross-field: named key has its default, so no origin.
        "storage.s3.bucket: required when storage.backend is s3".to_owned(),
        format!(
            "log.level: \"loud\" is not a level (use one of off, error, warn, info, debug or \
             trace, or target=level directives like spoor=debug,info) {origin}"
        ),
    ];
    assert_eq!(errors.to_string(), expected.join("\n"));
    assert_eq!(errors.errors()[0].key(), Some("otlp.grpc.listen_addres"));
}

#[test]
fn env_origin_is_named_in_errors() {
    let prefix = "SPOORTEST_ORIGIN_";
    let _vars = EnvVars::set(&[("SPOORTEST_ORIGIN_WAL__FSYNC", "sometimes")]);
    let errors =
        load_with_env_prefix(None, prefix, &ServerCliOverrides::default()).expect_err("bad fsync");
    assert_eq!(
        errors.errors(),
        [ConfigError::InvalidValue {
            key: "wal.fsync".to_owned(),
            message: "expected \"always\", \"never\" or a duration, got \"sometimes\"".to_owned(),
            origin: Some(ValueOrigin::EnvVar(
                "SPOORTEST_ORIGIN_WAL__FSYNC".to_owned()
            )),
        }]
    );
}

#[test]
fn a_missing_or_malformed_file_is_one_error_naming_the_path() {
    let missing = Path::new("/nonexistent/spoor/server.yaml");
    let errors = load_with_env_prefix(
        Some(missing),
        "SPOORTEST_UNUSED_",
        &ServerCliOverrides::default(),
    )
    .expect_err("missing file");
    assert_eq!(errors.errors().len(), 1);
    assert!(
        errors
            .to_string()
            .starts_with("config file /nonexistent/spoor/server.yaml: cannot read: "),
        "{errors}"
    );

    for (yaml, expected) in [
        ("wal: [unclosed", "invalid YAML: "),
        ("- a list\n- of things\n", "expected a mapping of sections"),
        (
            "wal:\n  fsync: never\nwal:\n  fsync: always\n",
            "invalid YAML: ",
        ),
    ] {
        let file = yaml_file(yaml);
        let errors = load_with_env_prefix(
            Some(file.path()),
            "SPOORTEST_UNUSED_",
            &ServerCliOverrides::default(),
        )
        .expect_err("bad file");
        let prefix = format!("config file {}: {expected}", file.path().display());
        assert_eq!(errors.errors().len(), 1, "{errors}");
        assert!(errors.to_string().starts_with(&prefix), "{errors}");
    }
}

#[test]
fn the_example_and_packaged_configs_load_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let laptop = load_with_env_prefix(
        Some(&root.join("examples/server.yaml")),
        "SPOORTEST_UNUSED_",
        &ServerCliOverrides::default(),
    );
    // The laptop example spells out the defaults.
    assert_eq!(laptop, Ok(default_config()));

    let packaged = load_with_env_prefix(
        Some(&root.join("packaging/server.yaml")),
        "SPOORTEST_UNUSED_",
        &ServerCliOverrides::default(),
    )
    .expect("packaged config loads");
    assert_eq!(packaged.api.listen_address, addr("0.0.0.0:3200"));
    assert_eq!(packaged.otlp.grpc.listen_address, addr("0.0.0.0:4319"));
    assert_eq!(packaged.otlp.http.listen_address, addr("0.0.0.0:4320"));
    assert_eq!(packaged.wal.dir, PathBuf::from("/var/lib/spoor-server/wal"));
    assert_eq!(
        packaged.storage.backend,
        BackendConfig::Local {
            path: PathBuf::from("/var/lib/spoor-server/blocks")
        }
    );
}

#[test]
fn retention_per_tenant_overrides_need_valid_tenants_and_positive_durations() {
    assert_errors(
        r#"
retention:
  per_tenant:
    acme: 0s
    "bad/tenant": 1d
    ok: 2h
"#,
        &[
            "retention.per_tenant.acme: must be greater than 0",
            "retention.per_tenant.bad/tenant: \"bad/tenant\" is not a valid tenant ID: tenant \
             ID contains unsupported character '/'",
        ],
    );
    let errors = load_yaml_errors("retention:\n  per_tenant:\n    acme: soon\n");
    assert_eq!(errors.iter().count(), 1, "{:?}", messages(&errors));
    assert!(
        messages(&errors)[0].contains("retention.per_tenant.acme"),
        "{:?}",
        messages(&errors)
    );
    // Keys under per_tenant are tenant names, not unknown keys; elsewhere they still are.
    let config = load_yaml("retention:\n  per_tenant:\n    anything: 3h\n").expect("valid");
    assert_eq!(
        config.retention.retention_for(&tenant("anything")),
        Duration::from_secs(3 * 3600)
    );
    assert_eq!(
        config.retention.retention_for(&tenant("other")),
        Duration::from_secs(14 * 24 * 3600)
    );
    let errors = load_yaml_errors("retention:\n  block_retentoin: 1d\n");
    assert!(
        messages(&errors)[0].contains("retention.block_retentoin"),
        "{:?}",
        messages(&errors)
    );
}

#[test]
fn peers_are_host_and_port_and_the_lease_outlives_two_cycles() {
    assert_errors(
        "cluster: { peers: [spoor-2:3200, spoor-3, ':3200', 'x:0'] }\n\
         compaction: { cycle: 1m, lease_duration: 90s }",
        &[
            "cluster.peers[1]: expected host:port of a spoor-server API, got \"spoor-3\"",
            "cluster.peers[2]: expected host:port of a spoor-server API, got \":3200\"",
            "cluster.peers[3]: expected host:port of a spoor-server API, got \"x:0\"",
            "compaction.lease_duration: must be at least twice compaction.cycle (1m): the \
             lease is renewed once a cycle",
        ],
    );
}

#[test]
fn compaction_merges_between_two_and_a_bounded_number_of_blocks() {
    for count in [0, 1, 65] {
        assert_errors(
            &format!("compaction: {{ max_input_blocks: {count} }}"),
            &[
                "compaction.max_input_blocks: must be between 2 and 64 (a compaction merges at \
               least two blocks)",
            ],
        );
    }
    let config = load_yaml("compaction: { max_input_blocks: 64 }").expect("valid config");
    assert_eq!(config.compaction.max_input_blocks, 64);
}

#[test]
fn metrics_generator_rules() {
    let errors = messages(&load_yaml_errors(
        r#"
metrics_generator:
  processors: [service-graphs, spanmetrics]
  queue_size: 0
  per_tenant:
    "": { enabled: false }
  service_graphs: { histogram_buckets: [1, 0.5], max_items: 0 }
  span_metrics: { histogram_buckets: [] }
  remote_write:
    endpoints:
      - url: prometheus:9090/api/v1/write
        headers: { "Bad Header": "secret-value" }
    external_labels: { "__reserved": x, "ok_label": y }
    inject_tenant_id_as: "not-a-label"
"#,
    ));
    let expected = [
        "metrics_generator.processors: expected \"service-graphs\" or \"span-metrics\", got \"spanmetrics\"",
        "metrics_generator.per_tenant.: tenant ID must not be empty",
        "metrics_generator.queue_size: must be at least 1",
        "metrics_generator.service_graphs.max_items: must be at least 1",
        "metrics_generator.service_graphs.histogram_buckets: buckets must be strictly ascending",
        "metrics_generator.span_metrics.histogram_buckets: at least one bucket is needed",
        "metrics_generator.remote_write.endpoints[0].url: expected a URL like http://127.0.0.1:9090/api/v1/write, got \"prometheus:9090/api/v1/write\"",
        "metrics_generator.remote_write.endpoints[0].headers.Bad Header: not a valid HTTP header name and value",
        "metrics_generator.remote_write.external_labels.__reserved: not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
        "metrics_generator.remote_write.inject_tenant_id_as: \"not-a-label\" is not a valid Prometheus label name",
    ];
    assert_eq!(errors, expected);
    // A header value may be a secret: errors name the header, never its value.
    assert!(errors.iter().all(|error| !error.contains("secret-value")));
}

#[test]
fn listener_tls_is_checked_at_load_and_errors_name_the_key() {
    let pki = crate::listener::tests::Pki::new();
    pki.leaf("server", 1);
    let (cert, key, ca) = (
        pki.path("server.pem").display().to_string(),
        pki.path("server.key").display().to_string(),
        pki.path("ca.pem").display().to_string(),
    );
    let config = load_yaml(&format!(
        "
api:
  tls: {{cert_file: {cert}, key_file: {key}}}
otlp:
  grpc:
    tls: {{cert_file: {cert}, key_file: {key}, client_ca_file: {ca}, reload_interval: 2s}}
"
    ))
    .expect("valid config");
    assert_eq!(
        config.api.tls,
        Some(ServerTlsConfig {
            cert_file: pki.path("server.pem"),
            key_file: pki.path("server.key"),
            client_ca_file: None,
            reload_interval: DEFAULT_TLS_RELOAD_INTERVAL,
        })
    );
    assert_eq!(
        config
            .otlp
            .grpc
            .tls
            .as_ref()
            .map(|tls| (&tls.client_ca_file, tls.reload_interval)),
        Some((&Some(pki.path("ca.pem")), Duration::from_secs(2)))
    );
    assert_eq!(config.otlp.http.tls, None);

    let errors = load_yaml_errors(&format!(
        "
api:
  tls: {{cert_file: {cert}, key_file: /nonexistent/server.key}}
otlp:
  grpc:
    tls: {{key_file: {key}}}
  http:
    tls: {{cert_file: {key}, key_file: {key}, reload_interval: 0s}}
"
    ));
    let found = messages(&errors);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_eq!(
        found[0],
        "otlp.grpc.tls.cert_file: is required when TLS is configured (cert_file and key_file \
         are set together)"
    );
    assert_eq!(
        found[1],
        "otlp.http.tls.reload_interval: must be greater than 0"
    );
    assert!(
        found[2].starts_with(&format!(
            "otlp.http.tls.cert_file: {key}: no PEM certificate"
        )),
        "{found:#?}"
    );
    assert!(
        found[3].starts_with("api.tls.key_file: /nonexistent/server.key: No such file"),
        "{found:#?}"
    );
}

#[test]
fn auth_credentials_are_read_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    let password = dir.path().join("password");
    std::fs::write(&token, "t0ken\n").expect("write");
    std::fs::write(&password, "hunter2").expect("write");
    let yaml = format!(
        "api:\n  auth:\n    basic:\n      - username: grafana\n        password_file: {}\n\
         otlp:\n  grpc:\n    auth:\n      bearer:\n        - token_file: {}\n          tenant: acme\n",
        password.display(),
        token.display()
    );
    let config = load_yaml(&yaml).expect("valid config");
    assert_eq!(
        config.api.auth.credentials,
        vec![Credential::Basic {
            username: "grafana".to_owned(),
            password: Secret::for_test("hunter2"),
            tenant: None,
        }]
    );
    assert_eq!(
        config.otlp.grpc.auth.credentials,
        vec![Credential::Bearer {
            token: Secret::for_test("t0ken"),
            tenant: Some(crate::tenant::TenantId::new("acme").expect("tenant")),
        }]
    );
    assert!(!config.otlp.http.auth.is_enabled());
    let rendered = format!("{config:?}");
    assert!(!rendered.contains("t0ken") && !rendered.contains("hunter2"));
}

#[test]
fn auth_errors_name_the_key_and_the_file_but_not_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").expect("write");
    let missing = dir.path().join("missing-password");
    let yaml = format!(
        "api:\n  auth:\n    bearer:\n      - token_file: {}\n      - tenant: acme\n    basic:\n      \
         - username: 'a:b'\n        password_file: {}\n        tenant: '../x'\n",
        empty.display(),
        missing.display()
    );
    let errors = messages(&load_yaml_errors(&yaml));
    let find = |key: &str| {
        errors
            .iter()
            .find(|message| message.starts_with(key))
            .unwrap_or_else(|| panic!("no error for {key}: {errors:?}"))
            .clone()
    };
    assert!(find("api.auth.bearer[0].token_file").contains("empty-token is empty"));
    assert!(find("api.auth.bearer[1].token_file").contains("is required"));
    assert!(find("api.auth.basic[0].password_file").contains("missing-password"));
    assert!(find("api.auth.basic[0].username").contains("':'"));
    assert!(find("api.auth.basic[0].tenant").contains("unsupported character"));
}

#[test]
fn inline_secrets_are_unknown_keys_reported_with_the_other_problems() {
    let errors = messages(&load_yaml_errors(
        "otlp:\n  http:\n    auth:\n      bearer:\n        - token: abc\n        - tenant: acme\n\
         wal:\n  path: ''\n",
    ));
    assert!(
        errors
            .iter()
            .any(|message| message.starts_with("otlp.http.auth.bearer[0].token: unknown field")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|message| message.starts_with("otlp.http.auth.bearer[1].token_file: is required")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|message| message.starts_with("wal.path")),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|message| !message.contains("abc")),
        "{errors:?}"
    );
}
