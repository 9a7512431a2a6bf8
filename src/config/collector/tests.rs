use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use super::*;
use crate::config::{ConfigError, ConfigErrors, LogFormat, ServerTlsConfig};

fn load_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<CollectorConfig, ConfigErrors> {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(yaml.as_bytes()).expect("write");
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    load_collector_config_with_env(Some(file.path()), &env)
}

fn errors(yaml: &str) -> Vec<String> {
    match load_yaml(yaml, &[]) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors
            .iter()
            .map(|error| strip_origin(&error.to_string()))
            .collect(),
    }
}

/// Drops the ` [file /tmp/…]` suffix, which differs per run.
fn strip_origin(message: &str) -> String {
    match message.rfind(" [") {
        Some(index) if message.ends_with(']') => message[..index].to_owned(),
        _ => message.to_owned(),
    }
}

fn id(text: &str) -> ComponentId {
    ComponentId::parse(text).expect("valid id")
}

const MINIMAL: &str = "
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
";

#[test]
fn built_in_default_is_the_documented_appliance() {
    let config = load_collector_config_with_env(None, &BTreeMap::new()).expect("default loads");
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&id("otlp")] else {
        panic!("otlp receiver");
    };
    assert_eq!(
        otlp.grpc.as_ref().map(|grpc| grpc.endpoint.to_string()),
        Some("127.0.0.1:4317".to_owned())
    );
    assert_eq!(
        otlp.http.as_ref().map(|http| http.endpoint.to_string()),
        Some("127.0.0.1:4318".to_owned())
    );
    let ExporterConfig::Otlp(exporter) = &config.exporters[&id("otlp")] else {
        panic!("otlp exporter expected");
    };
    assert_eq!(exporter.endpoint, "http://127.0.0.1:4319");
    assert_eq!(exporter.tls, None);
    assert_eq!(exporter.compression, Compression::Gzip);
    let persistent = exporter
        .queue
        .persistent
        .as_ref()
        .expect("persistent queue");
    assert_eq!(
        persistent.directory,
        std::path::Path::new("./data/queue/otlp")
    );
    assert!(persistent.fsync);
    assert_eq!(config.pipelines.len(), 1);
    assert_eq!(config.pipelines[0].processors, vec![id("batch")]);
    assert_eq!(
        config.telemetry.metrics_address.map(|a| a.to_string()),
        Some("127.0.0.1:8888".to_owned())
    );
    assert!(matches!(
        config.extensions.as_slice(),
        [(_, ExtensionConfig::HealthCheck(_))]
    ));
}

#[test]
fn otel_defaults_fill_empty_sections() {
    let config = load_yaml(
        "
receivers:
  otlp:
    protocols:
      grpc:
      http:
processors:
  batch:
  memory_limiter:
    check_interval: 1s
    limit_mib: 500
exporters:
  otlp:
    endpoint: collector.example.com:4317
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp]
",
        &[],
    )
    .expect("loads");
    assert_eq!(
        config.processors[&id("batch")],
        ProcessorConfig::Batch(BatchConfig {
            send_batch_size: Some(8192),
            send_batch_max_size: None,
            timeout: Duration::from_millis(200),
            max_tenants: 1000,
        })
    );
    assert_eq!(
        config.processors[&id("memory_limiter")],
        ProcessorConfig::MemoryLimiter(MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit: MemoryLimit::Absolute {
                limit_bytes: 500 << 20,
                spike_bytes: 100 << 20,
            },
        })
    );
    let ExporterConfig::Otlp(exporter) = &config.exporters[&id("otlp")] else {
        panic!("otlp exporter expected");
    };
    // No tls.insecure: TLS, as in the OpenTelemetry Collector.
    assert_eq!(exporter.endpoint, "https://collector.example.com:4317");
    assert!(exporter.tls.is_some());
    assert_eq!(
        exporter.retry,
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Some(Duration::from_secs(300)),
        }
    );
    assert_eq!(exporter.queue.num_consumers, 10);
    assert_eq!(exporter.queue.queue_size, 1000);
    assert_eq!(exporter.queue.sizer, QueueSizer::Requests);
    assert_eq!(exporter.queue.persistent, None);
    assert_eq!(exporter.timeout, Duration::from_secs(5));
}

#[test]
fn named_instances_fan_out_and_shared_receivers() {
    let config = load_yaml(
        "
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
  otlp/2:
    protocols:
      http:
        endpoint: 127.0.0.1:0
processors:
  batch:
  batch/fast:
    timeout: 10ms
exporters:
  otlp:
    endpoint: primary:4317
    tls:
      insecure: true
  otlp/backup:
    endpoint: http://backup:4317
  otlphttp:
    endpoint: https://backend.example.com:4318/
  debug:
    verbosity: detailed
service:
  pipelines:
    traces:
      receivers: [otlp, otlp/2]
      processors: [batch]
      exporters: [otlp, otlp/backup, debug]
    traces/2:
      receivers: [otlp]
      processors: [batch/fast]
      exporters: [otlphttp]
",
        &[],
    )
    .expect("loads");
    assert_eq!(config.pipelines.len(), 2);
    assert_eq!(config.pipelines[1].id, id("traces/2"));
    assert_eq!(
        config.pipelines[0].exporters,
        vec![id("otlp"), id("otlp/backup"), id("debug")]
    );
    let ExporterConfig::Otlp(backup) = &config.exporters[&id("otlp/backup")] else {
        panic!("otlp");
    };
    assert_eq!(backup.endpoint, "http://backup:4317");
    assert!(backup.tls.is_none());
    let ExporterConfig::OtlpHttp(http) = &config.exporters[&id("otlphttp")] else {
        panic!("otlphttp");
    };
    assert_eq!(
        http.traces_url,
        "https://backend.example.com:4318/v1/traces"
    );
    assert_eq!(id("otlp/backup").file_name(), "otlp_backup");
}

#[test]
fn unsupported_components_are_named_with_the_supported_list() {
    let messages = errors(
        "
receivers:
  otlp:
    protocols:
      grpc:
  kafka:
    brokers: [localhost:9092]
processors:
  k8sattributes:
  batch:
exporters:
  logging:
  debug:
extensions:
  pprof:
service:
  extensions: [pprof]
  pipelines:
    traces:
      receivers: [otlp, kafka]
      processors: [k8sattributes, batch]
      exporters: [debug, logging]
    metrics:
      receivers: [otlp]
      exporters: [debug]
",
    );
    let expected = [
        "extensions.pprof: unsupported extension type \"pprof\" (supported: basicauth, bearertokenauth, file_storage, health_check)",
        "receivers.kafka: unsupported receiver type \"kafka\" (supported: jaeger, otlp, zipkin)",
        "processors.k8sattributes: unsupported processor type \"k8sattributes\" (supported: attributes, batch, memory_limiter, probabilistic_sampler, redaction, resource, tail_sampling)",
        "exporters.logging: unsupported exporter type \"logging\" (supported: debug, loadbalancing, otlp, otlphttp); the OpenTelemetry Collector replaced it by debug",
        "service.pipelines.metrics: only traces pipelines are supported (found a metrics pipeline); remove it or move its data elsewhere",
    ];
    for message in expected {
        assert!(
            messages.contains(&message.to_owned()),
            "missing {message:?} in {messages:#?}"
        );
    }
    // Unsupported components are reported once, not again by each pipeline using them.
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
}

#[test]
fn all_errors_at_once_with_key_paths_and_suggestions() {
    let messages = errors(
        "
receivers:
  otlp:
    protocols:
      grpc:
        endpiont: 0.0.0.0:4317
        max_recv_msg_size_mib: lots
processors:
  batch:
    send_batch_size: 100
    send_batch_max_size: 10
exporters:
  otlp:
    insecure: true
    compression: snappy
    retry_on_failure:
      multiplier: 0.5
    sending_queue:
      storage: file_storage/missing
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, batch/2]
      exporters: [otlp]
",
    );
    let expected = [
        "receivers.otlp.protocols.grpc.endpiont: unknown key (did you mean protocols.grpc.endpoint?)",
        "receivers.otlp.protocols.grpc.max_recv_msg_size_mib: expected a whole number, got \"lots\"",
        "processors.batch.send_batch_max_size: must be 0 or at least send_batch_size (100)",
        "exporters.otlp.insecure: unknown key (did you mean tls.insecure?)",
        "exporters.otlp.endpoint: is required (host:port of the OTLP/gRPC server)",
        "exporters.otlp.compression: expected \"gzip\", \"zstd\" or \"none\", got \"snappy\"",
        "exporters.otlp.retry_on_failure.multiplier: must be at least 1",
        "exporters.otlp.sending_queue.storage: extension \"file_storage/missing\" is not defined in extensions",
        "service.pipelines.traces.processors[1]: processor \"batch/2\" is not defined in processors",
    ];
    for message in expected {
        assert!(
            messages.contains(&message.to_owned()),
            "missing {message:?} in {messages:#?}"
        );
    }
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
}

#[test]
fn env_substitution_types_and_defaults() {
    let config = load_yaml(
        "
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:GRPC_ENDPOINT}
processors:
  batch:
    send_batch_size: ${env:BATCH_SIZE}
    timeout: ${env:BATCH_TIMEOUT:-1s}
exporters:
  otlp:
    endpoint: ${BACKEND}:4317
    tls:
      insecure: ${env:INSECURE}
    headers:
      authorization: Bearer ${env:TOKEN}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
",
        &[
            ("GRPC_ENDPOINT", "127.0.0.1:0"),
            ("BATCH_SIZE", "512"),
            ("BACKEND", "tempo"),
            ("INSECURE", "true"),
        ],
    )
    .expect("loads");
    let ProcessorConfig::Batch(batch) = &config.processors[&id("batch")] else {
        panic!("batch");
    };
    assert_eq!(batch.send_batch_size, Some(512));
    assert_eq!(batch.timeout, Duration::from_secs(1));
    let ExporterConfig::Otlp(exporter) = &config.exporters[&id("otlp")] else {
        panic!("otlp");
    };
    assert_eq!(exporter.endpoint, "http://tempo:4317");
    assert_eq!(
        exporter.headers,
        vec![("authorization".to_owned(), "Bearer ".to_owned())]
    );
    assert_eq!(
        config.warnings,
        vec!["exporters.otlp.headers.authorization: environment variable TOKEN is not set; it was replaced by an empty string".to_owned()]
    );
}

#[test]
fn spoor_env_overrides_keys_and_keeps_string_text() {
    let config = load_yaml(
        MINIMAL,
        &[
            (
                "SPOOR_RECEIVERS__OTLP__PROTOCOLS__GRPC__ENDPOINT",
                "127.0.0.1:0",
            ),
            ("SPOOR_SERVICE__TELEMETRY__LOGS__LEVEL", "DEBUG"),
            ("SPOOR_SERVICE__TELEMETRY__METRICS__LEVEL", "none"),
            ("SPOOR_EXPORTERS__DEBUG__VERBOSITY", "normal"),
            ("SPOOR_CONFIG", "/ignored.yaml"),
        ],
    )
    .expect("loads");
    assert_eq!(config.telemetry.logs.level, "debug");
    assert_eq!(config.telemetry.logs.format, LogFormat::Auto);
    assert_eq!(config.telemetry.metrics_address, None);
    let ExporterConfig::Debug(debug) = &config.exporters[&id("debug")] else {
        panic!("debug");
    };
    assert_eq!(debug.verbosity, Verbosity::Normal);

    let error = load_yaml(MINIMAL, &[("SPOOR_EXPORTERS__DEBUG__VERBOSITYY", "normal")])
        .expect_err("unknown key");
    assert_eq!(
        error.errors()[0],
        ConfigError::UnknownKey {
            key: "exporters.debug.verbosityy".to_owned(),
            suggestion: Some("verbosity".to_owned()),
            origin: Some(crate::config::ValueOrigin::EnvVar(
                "SPOOR_EXPORTERS__DEBUG__VERBOSITYY".to_owned()
            )),
        }
    );
}

#[test]
fn file_storage_extension_and_spoor_persistent_key() {
    let config = load_yaml(
        "
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  otlp:
    endpoint: backend:4317
    tls:
      insecure: true
    sending_queue:
      storage: file_storage/otc
  otlp/2:
    endpoint: backend2:4317
    tls:
      insecure: true
    sending_queue:
      persistent:
        directory: /var/lib/spoor-collector/queue
        max_size: 64MiB
extensions:
  file_storage/otc:
    directory: /var/lib/storage/otc
    timeout: 10s
service:
  extensions: [file_storage/otc]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp, otlp/2]
",
        &[],
    )
    .expect("loads");
    let queue = |name: &str| match &config.exporters[&id(name)] {
        ExporterConfig::Otlp(otlp) => otlp.queue.persistent.clone().expect("persistent"),
        _ => panic!("otlp"),
    };
    assert_eq!(
        queue("otlp"),
        PersistentQueueConfig {
            directory: "/var/lib/storage/otc/otlp".into(),
            max_bytes: 1 << 30,
            fsync: true,
        }
    );
    assert_eq!(
        queue("otlp/2"),
        PersistentQueueConfig {
            directory: "/var/lib/spoor-collector/queue/otlp_2".into(),
            max_bytes: 64 << 20,
            fsync: true,
        }
    );

    let messages = errors(
        "
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  otlp:
    endpoint: backend:4317
    sending_queue:
      storage: file_storage
extensions:
  file_storage:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
",
    );
    assert_eq!(
        messages,
        vec!["exporters.otlp.sending_queue.storage: extension \"file_storage\" must also be listed in service.extensions"]
    );
}

#[test]
fn listener_clashes_and_missing_pipelines() {
    let messages = errors(
        "
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 127.0.0.1:4317
",
    );
    assert!(messages.contains(
        &"receivers.otlp.protocols.http.endpoint: 127.0.0.1:4317 conflicts with receivers.otlp.protocols.grpc.endpoint (0.0.0.0:4317): two listeners cannot share a port".to_owned()
    ), "{messages:#?}");
    assert!(messages
        .contains(&"service.pipelines: at least one traces pipeline is required".to_owned()));
}

#[test]
fn component_ids() {
    assert_eq!(id("otlp/backup").kind(), "otlp");
    assert_eq!(id("otlp/backup").name(), Some("backup"));
    assert_eq!(id("otlp/a/b").name(), Some("a/b"));
    assert_eq!(id("otlp").to_string(), "otlp");
    assert!(ComponentId::parse("otlp/").is_err());
    assert!(ComponentId::parse("/x").is_err());
    assert!(ComponentId::parse("").is_err());
}

#[test]
fn zipkin_receiver_defaults_to_loopback_and_takes_otelcol_keys() {
    let config = load_yaml(
        "
receivers:
  zipkin:
  zipkin/typed:
    endpoint: :9412
    parse_string_tags: true
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [zipkin, zipkin/typed]
      exporters: [debug]
",
        &[],
    )
    .expect("valid");
    let ReceiverConfig::Zipkin(plain) = &config.receivers[&id("zipkin")] else {
        panic!("zipkin receiver");
    };
    assert_eq!(plain.endpoint, "127.0.0.1:9411".parse().expect("addr"));
    assert!(!plain.parse_string_tags);
    assert_eq!(plain.max_request_body_bytes, 20 << 20);
    let ReceiverConfig::Zipkin(typed) = &config.receivers[&id("zipkin/typed")] else {
        panic!("zipkin receiver");
    };
    assert_eq!(typed.endpoint, "0.0.0.0:9412".parse().expect("addr"));
    assert!(typed.parse_string_tags);

    let messages = errors(
        "
receivers:
  zipkin:
    endpoint: nowhere
    cors: {}
  zipkin/2:
    endpoint: 127.0.0.1:4317
  otlp:
    protocols:
      grpc:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [zipkin, zipkin/2, otlp]
      exporters: [debug]
",
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("receivers.zipkin.cors")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("receivers.zipkin/2.endpoint")
                || m.starts_with("receivers.otlp.protocols.grpc.endpoint")),
        "port clash reported: {messages:#?}"
    );
}

#[test]
fn loadbalancing_exporter_applies_protocol_otlp_to_each_sorted_backend() {
    let config = load_yaml(
        "
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  loadbalancing:
    protocol:
      otlp:
        endpoint: ignored:4317
        timeout: 1s
        tls: {insecure: true}
        sending_queue:
          persistent:
            directory: /var/lib/q
    resolver:
      static:
        hostnames: [backend-2:4317, backend-3, 'backend-1:5317']
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [loadbalancing]
",
        &[],
    )
    .expect("loads");
    let ExporterConfig::LoadBalancing(lb) = &config.exporters[&id("loadbalancing")] else {
        panic!("loadbalancing exporter");
    };
    assert_eq!(lb.routing_key, RoutingKey::TraceId);
    assert_eq!(lb.failover, None);
    let summary: Vec<(&str, &str, Option<&std::path::Path>)> = lb
        .backends
        .iter()
        .map(|backend| {
            (
                backend.hostname.as_str(),
                backend.exporter.endpoint.as_str(),
                backend
                    .exporter
                    .queue
                    .persistent
                    .as_ref()
                    .map(|persistent| persistent.directory.as_path()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "backend-1:5317",
                "http://backend-1:5317",
                Some(std::path::Path::new(
                    "/var/lib/q/loadbalancing/backend-1_5317"
                ))
            ),
            (
                "backend-2:4317",
                "http://backend-2:4317",
                Some(std::path::Path::new(
                    "/var/lib/q/loadbalancing/backend-2_4317"
                ))
            ),
            (
                "backend-3",
                "http://backend-3:4317",
                Some(std::path::Path::new("/var/lib/q/loadbalancing/backend-3"))
            ),
        ]
    );
    for backend in &lb.backends {
        assert_eq!(backend.exporter.timeout, Duration::from_secs(1));
        assert!(backend.exporter.tls.is_none());
    }
    assert_eq!(
        config.warnings,
        vec![
            "exporters.loadbalancing.protocol.otlp.endpoint is ignored: the backends come from exporters.loadbalancing.resolver"
                .to_owned()
        ]
    );
}

#[test]
fn loadbalancing_dns_resolver_takes_contrib_keys_and_defaults() {
    let config = load_yaml(
        "
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  loadbalancing:
    protocol:
      otlp:
        tls: {insecure: true}
        sending_queue:
          persistent:
            directory: /var/lib/q
    resolver:
      dns:
        hostname: spoor-servers.example.com
  loadbalancing/tuned:
    resolver:
      dns:
        hostname: ' spoor-servers.example.com '
        port: '5317'
        interval: 250ms
        timeout: 2s
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [loadbalancing, loadbalancing/tuned]
",
        &[],
    )
    .expect("loads");
    let ExporterConfig::LoadBalancing(lb) = &config.exporters[&id("loadbalancing")] else {
        panic!("loadbalancing exporter");
    };
    assert!(lb.backends.is_empty(), "found at run time");
    let dns = lb.dns.as_ref().expect("a dns resolver");
    assert_eq!(dns.hostname, "spoor-servers.example.com");
    assert_eq!(dns.port, 4317);
    assert_eq!(dns.interval, Duration::from_secs(5));
    assert_eq!(dns.timeout, Duration::from_secs(1));
    assert!(dns.backend.tls.is_none());
    let backend = LoadBalancingBackend::for_address(&dns.backend, "127.0.0.2:4317");
    assert_eq!(backend.hostname, "127.0.0.2:4317");
    assert_eq!(backend.exporter.endpoint, "http://127.0.0.2:4317");
    assert_eq!(
        backend.exporter.queue.persistent.map(|p| p.directory),
        Some(std::path::PathBuf::from(
            "/var/lib/q/loadbalancing/127.0.0.2_4317"
        ))
    );

    let ExporterConfig::LoadBalancing(tuned) = &config.exporters[&id("loadbalancing/tuned")] else {
        panic!("loadbalancing exporter");
    };
    let dns = tuned.dns.as_ref().expect("a dns resolver");
    assert_eq!(dns.hostname, "spoor-servers.example.com");
    assert_eq!(dns.port, 5317);
    assert_eq!(dns.interval, Duration::from_millis(250));
    assert_eq!(dns.timeout, Duration::from_secs(2));
    assert!(dns.backend.tls.is_some(), "TLS unless tls.insecure");
    assert_eq!(
        LoadBalancingBackend::for_address(&dns.backend, "[::1]:5317")
            .exporter
            .endpoint,
        "https://[::1]:5317"
    );
}

#[test]
fn loadbalancing_exporter_errors_name_their_keys_all_at_once() {
    let found = errors(
        "
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  loadbalancing:
    routing_key: metric
    protocol:
      otlp:
        timeout: 0s
    resolver:
      static:
        hostnames: [backend-1, 'bad host:x', backend-1]
  loadbalancing/both:
    resolver:
      dns:
        hostname: otelcol-backends.example.com
      static:
        hostnames: [backend-1]
  loadbalancing/dns:
    resolver:
      dns:
        port: 70000
        interval: 0s
        timeout: 0s
      k8s:
        service: backends.default
  loadbalancing/empty:
    resolver:
      static:
        hostnames: []
  loadbalancing/none:
    protocol:
      otlp:
        tls: {insecure: true}
    failover:
      enabled: true
      unhealthy_after: 0s
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [loadbalancing, loadbalancing/both, loadbalancing/dns, loadbalancing/empty, loadbalancing/none]
",
    );
    let mut found = found;
    found.sort();
    assert_eq!(
        found,
        vec![
            "exporters.loadbalancing.protocol.otlp.timeout: must be greater than 0",
            "exporters.loadbalancing.resolver.static.hostnames[1]: expected host:port like backend.example.com:4317, got \"bad host:x\"",
            "exporters.loadbalancing.resolver.static.hostnames[2]: \"backend-1\" is listed twice",
            "exporters.loadbalancing.routing_key: unsupported routing_key \"metric\" (supported for traces: traceID, service)",
            "exporters.loadbalancing/both.resolver: set exactly one of static and dns, not both",
            "exporters.loadbalancing/dns.resolver.dns.hostname: is required (the name whose A/AAAA records are the backends)",
            "exporters.loadbalancing/dns.resolver.dns.interval: must be greater than 0",
            "exporters.loadbalancing/dns.resolver.dns.port: must be a port number (1-65535)",
            "exporters.loadbalancing/dns.resolver.dns.timeout: must be greater than 0",
            "exporters.loadbalancing/dns.resolver.k8s: unsupported resolver \"k8s\" (supported: static, dns)",
            "exporters.loadbalancing/empty.resolver.static.hostnames: must list at least one backend (host or host:port)",
            "exporters.loadbalancing/none.failover.unhealthy_after: must be greater than 0",
            "exporters.loadbalancing/none.resolver: a static resolver with hostnames or a dns resolver with a hostname is required",
        ]
    );
}

#[test]
fn jaeger_receiver_starts_listed_protocols_with_contrib_keys() {
    let config = load_yaml(
        "
receivers:
  jaeger:
    protocols:
      grpc:
      thrift_http:
        endpoint: :14269
      thrift_compact:
        queue_size: 10
        max_packet_size: 1000
        workers: 2
        socket_buffer_size: 1MiB
  jaeger/binary:
    protocols:
      thrift_binary:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [jaeger, jaeger/binary]
      exporters: [debug]
",
        &[],
    )
    .expect("valid");
    let ReceiverConfig::Jaeger(jaeger) = &config.receivers[&id("jaeger")] else {
        panic!("jaeger receiver");
    };
    let grpc = jaeger.grpc.as_ref().expect("grpc");
    assert_eq!(grpc.endpoint, "127.0.0.1:14250".parse().expect("addr"));
    assert_eq!(grpc.max_recv_msg_bytes, 4 << 20);
    let http = jaeger.thrift_http.as_ref().expect("thrift_http");
    assert_eq!(http.endpoint, "0.0.0.0:14269".parse().expect("addr"));
    assert_eq!(
        jaeger.thrift_compact,
        Some(JaegerUdpConfig {
            endpoint: "127.0.0.1:6831".parse().expect("addr"),
            queue_size: 10,
            max_packet_size: 1000,
            workers: 2,
            socket_buffer_size: 1 << 20,
        })
    );
    assert!(jaeger.thrift_binary.is_none());
    let ReceiverConfig::Jaeger(binary) = &config.receivers[&id("jaeger/binary")] else {
        panic!("jaeger receiver");
    };
    assert!(binary.grpc.is_none() && binary.thrift_http.is_none());
    assert_eq!(
        binary.thrift_binary.as_ref().map(|udp| (
            udp.endpoint,
            udp.queue_size,
            udp.max_packet_size,
            udp.workers
        )),
        Some(("127.0.0.1:6832".parse().expect("addr"), 1000, 65_000, 10))
    );

    let messages = errors(
        "
receivers:
  jaeger:
    protocols:
      thrift_compact:
        max_packet_size: 70000
        workers: 0
        remote_sampling: {}
  jaeger/none:
    protocols: {}
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [jaeger, jaeger/none]
      exporters: [debug]
",
    );
    for expected in [
        "receivers.jaeger.protocols.thrift_compact.max_packet_size",
        "receivers.jaeger.protocols.thrift_compact.workers",
        "receivers.jaeger.protocols.thrift_compact.remote_sampling",
        "receivers.jaeger/none.protocols",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{expected} in {messages:#?}"
        );
    }
}

/// A collector config with auth extensions whose secret files live in `dir`.
fn auth_yaml(dir: &std::path::Path, extra_extensions: &str, listed: &str) -> String {
    format!(
        "
extensions:
  bearertokenauth/in:
    filename: {dir}/in-token
    tenant: acme
  bearertokenauth/out:
    scheme: Bearer
    filename: {dir}/out-token
  basicauth/users:
    htpasswd:
      file: {dir}/htpasswd
  basicauth/client:
    client_auth:
      username: collector
      password_file: {dir}/password
{extra_extensions}
receivers:
  otlp:
    protocols:
      grpc:
        auth:
          authenticator: bearertokenauth/in
      http:
        auth:
          authenticator: basicauth/users
exporters:
  otlp:
    endpoint: 127.0.0.1:4319
    tls:
      insecure: true
    auth:
      authenticator: bearertokenauth/out
  otlphttp:
    endpoint: http://127.0.0.1:4320
    auth:
      authenticator: basicauth/client
service:
  extensions: [{listed}]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp, otlphttp]
",
        dir = dir.display()
    )
}

fn auth_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("in-token", "in-s3cret\n");
    write("out-token", "out-s3cret\n");
    write(
        "htpasswd",
        "# users\ngrafana:hunter2\n\nalice:wonder:land\n",
    );
    write("password", "p4ss\n");
    dir
}

const ALL_AUTH: &str = "bearertokenauth/in, bearertokenauth/out, basicauth/users, basicauth/client";

#[test]
fn auth_extensions_protect_receivers_and_credit_exporters() {
    use crate::auth::{ClientAuth, Credential, Secret};
    let dir = auth_files();
    let config = load_yaml(&auth_yaml(dir.path(), "", ALL_AUTH), &[]).expect("valid");
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&id("otlp")] else {
        panic!("otlp receiver");
    };
    let grpc = otlp.grpc.as_ref().expect("grpc");
    assert_eq!(
        grpc.auth.credentials,
        vec![Credential::Bearer {
            token: Secret::for_test("in-s3cret"),
            tenant: Some(crate::tenant::TenantId::new("acme").expect("tenant")),
        }]
    );
    let http = otlp.http.as_ref().expect("http");
    assert_eq!(
        http.auth.credentials,
        vec![
            Credential::Basic {
                username: "grafana".to_owned(),
                password: Secret::for_test("hunter2"),
                tenant: None,
            },
            // Only the first colon separates user and password.
            Credential::Basic {
                username: "alice".to_owned(),
                password: Secret::for_test("wonder:land"),
                tenant: None,
            },
        ]
    );
    let ExporterConfig::Otlp(otlp_exporter) = &config.exporters[&id("otlp")] else {
        panic!("otlp exporter");
    };
    assert_eq!(
        otlp_exporter.auth,
        Some(ClientAuth::Bearer {
            scheme: "Bearer".to_owned(),
            token: Secret::for_test("out-s3cret"),
        })
    );
    let ExporterConfig::OtlpHttp(http_exporter) = &config.exporters[&id("otlphttp")] else {
        panic!("otlphttp exporter");
    };
    assert_eq!(
        http_exporter.auth,
        Some(ClientAuth::Basic {
            username: "collector".to_owned(),
            password: Secret::for_test("p4ss"),
        })
    );
    let rendered = format!("{config:?}");
    for secret in ["in-s3cret", "out-s3cret", "hunter2", "wonder:land", "p4ss"] {
        assert!(!rendered.contains(secret), "{secret} in {rendered}");
    }
}

#[test]
fn auth_errors_name_the_key() {
    let dir = auth_files();
    // Not listed in service.extensions.
    let errors_found = errors(&auth_yaml(
        dir.path(),
        "",
        "bearertokenauth/out, basicauth/users, basicauth/client",
    ));
    assert_eq!(
        errors_found,
        vec![
            "receivers.otlp.protocols.grpc.auth.authenticator: extension \"bearertokenauth/in\" \
             must also be listed in service.extensions"
        ]
    );

    // Unknown authenticator, and the wrong side of a basicauth.
    let yaml = auth_yaml(dir.path(), "", ALL_AUTH)
        .replace(
            "authenticator: bearertokenauth/out",
            "authenticator: bearertokenauth/nope",
        )
        .replace(
            "authenticator: basicauth/client",
            "authenticator: basicauth/users",
        );
    let errors_found = errors(&yaml);
    assert_eq!(
        errors_found,
        vec![
            "exporters.otlp.auth.authenticator: extension \"bearertokenauth/nope\" is not \
             defined in extensions",
            "exporters.otlphttp.auth.authenticator: this basicauth extension has only \
             htpasswd; an exporter needs client_auth",
        ]
    );

    // Missing and empty files, inline secrets, hashed htpasswd lines.
    std::fs::write(dir.path().join("out-token"), "\n").expect("write");
    std::fs::write(dir.path().join("htpasswd"), "grafana:$apr1$abc$def\n").expect("write");
    std::fs::remove_file(dir.path().join("password")).expect("remove");
    let yaml = auth_yaml(
        dir.path(),
        "  bearertokenauth/inline:\n    token: sup3r-secret-inline\n",
        ALL_AUTH,
    );
    let errors_found = errors(&yaml);
    let find = |prefix: &str| {
        errors_found
            .iter()
            .find(|error| error.starts_with(prefix))
            .unwrap_or_else(|| panic!("no error for {prefix}: {errors_found:#?}"))
            .clone()
    };
    assert!(find("extensions.bearertokenauth/out.filename").ends_with("out-token is empty"));
    assert!(find("extensions.basicauth/users.htpasswd.file")
        .contains("line 1: hashed passwords are not supported"));
    assert!(find("extensions.basicauth/client.client_auth.password_file").contains("cannot read"));
    assert!(find("extensions.bearertokenauth/inline.token").contains("files only"));
    assert!(find("extensions.bearertokenauth/inline.filename").contains("is required"));
    for error in &errors_found {
        assert!(
            !error.contains("sup3r-secret-inline") && !error.contains("$apr1$"),
            "{error}"
        );
    }
}

#[test]
fn zipkin_and_jaeger_receivers_take_an_authenticator() {
    let dir = auth_files();
    let yaml = format!(
        "
extensions:
  bearertokenauth/in:
    filename: {dir}/in-token
receivers:
  zipkin:
    auth:
      authenticator: bearertokenauth/in
  jaeger:
    protocols:
      grpc:
        auth:
          authenticator: bearertokenauth/in
      thrift_http:
        auth:
          authenticator: bearertokenauth/nope
exporters:
  debug:
service:
  extensions: [bearertokenauth/in]
  pipelines:
    traces:
      receivers: [zipkin, jaeger]
      exporters: [debug]
",
        dir = dir.path().display()
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "receivers.jaeger.protocols.thrift_http.auth.authenticator: extension \
             \"bearertokenauth/nope\" is not defined in extensions"
        ]
    );
    let config = load_yaml(
        &yaml.replace("bearertokenauth/nope", "bearertokenauth/in"),
        &[],
    )
    .expect("valid");
    let ReceiverConfig::Zipkin(zipkin) = &config.receivers[&id("zipkin")] else {
        panic!("zipkin receiver");
    };
    assert!(zipkin.auth.is_enabled());
    let ReceiverConfig::Jaeger(jaeger) = &config.receivers[&id("jaeger")] else {
        panic!("jaeger receiver");
    };
    assert!(jaeger
        .grpc
        .as_ref()
        .is_some_and(|grpc| grpc.auth.is_enabled()));
    assert!(jaeger
        .thrift_http
        .as_ref()
        .is_some_and(|http| http.auth.is_enabled()));
}

#[test]
fn listener_tls_sections_load_their_files_and_errors_name_the_key() {
    let pki = crate::listener::tests::Pki::new();
    pki.leaf("server", 1);
    pki.leaf("other", 2);
    let (cert, key, ca) = (
        pki.path("server.pem").display().to_string(),
        pki.path("server.key").display().to_string(),
        pki.path("ca.pem").display().to_string(),
    );
    let config = load_yaml(
        &format!(
            "
receivers:
  otlp:
    protocols:
      grpc:
        tls: {{cert_file: {cert}, key_file: {key}, client_ca_file: {ca}, reload_interval: 30s}}
      http:
        tls: {{cert_file: {cert}, key_file: {key}}}
  zipkin:
    tls: {{cert_file: {cert}, key_file: {key}}}
  jaeger:
    protocols:
      grpc:
        tls: {{cert_file: {cert}, key_file: {key}}}
      thrift_http:
        tls: {{cert_file: {cert}, key_file: {key}}}
exporters:
  debug:
extensions:
  health_check:
    tls: {{cert_file: {cert}, key_file: {key}}}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp, zipkin, jaeger]
      exporters: [debug]
  telemetry:
    metrics:
      tls: {{cert_file: {cert}, key_file: {key}}}
"
        ),
        &[],
    )
    .expect("valid config");
    let plain_tls = ServerTlsConfig {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("server.key"),
        client_ca_file: None,
        reload_interval: crate::config::DEFAULT_TLS_RELOAD_INTERVAL,
    };
    let Some(ReceiverConfig::Otlp(otlp)) = config.receivers.get(&id("otlp")) else {
        panic!("otlp receiver missing");
    };
    assert_eq!(
        otlp.grpc.as_ref().and_then(|grpc| grpc.tls.clone()),
        Some(ServerTlsConfig {
            client_ca_file: Some(pki.path("ca.pem")),
            reload_interval: Duration::from_secs(30),
            ..plain_tls.clone()
        })
    );
    assert_eq!(
        otlp.http.as_ref().and_then(|http| http.tls.clone()),
        Some(plain_tls.clone())
    );
    let Some(ReceiverConfig::Zipkin(zipkin)) = config.receivers.get(&id("zipkin")) else {
        panic!("zipkin receiver missing");
    };
    assert_eq!(zipkin.tls, Some(plain_tls.clone()));
    let Some(ReceiverConfig::Jaeger(jaeger)) = config.receivers.get(&id("jaeger")) else {
        panic!("jaeger receiver missing");
    };
    assert_eq!(
        jaeger.grpc.as_ref().and_then(|g| g.tls.clone()),
        Some(plain_tls.clone())
    );
    assert_eq!(
        jaeger.thrift_http.as_ref().and_then(|h| h.tls.clone()),
        Some(plain_tls.clone())
    );
    let Some((_, ExtensionConfig::HealthCheck(health))) = config.extensions.first() else {
        panic!("health_check missing");
    };
    assert_eq!(health.tls, Some(plain_tls.clone()));
    assert_eq!(config.telemetry.metrics_tls, Some(plain_tls));

    let other_key = pki.path("other.key").display().to_string();
    let found = errors(&format!(
        "
receivers:
  otlp:
    protocols:
      grpc:
        tls: {{cert_file: {cert}}}
      http:
        tls: {{cert_file: {cert}, key_file: {other_key}}}
  zipkin:
    tls: {{cert_file: /nonexistent/server.pem, key_file: {key}}}
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      exporters: [debug]
"
    ));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        found[0],
        "receivers.otlp.protocols.grpc.tls.key_file: is required when TLS is configured \
         (cert_file and key_file are set together)"
    );
    assert_eq!(
        found[1],
        format!(
            "receivers.otlp.protocols.http.tls.key_file: {other_key}: does not match the \
             certificate in {cert}"
        )
    );
    assert!(
        found[2]
            .starts_with("receivers.zipkin.tls.cert_file: /nonexistent/server.pem: No such file"),
        "{found:#?}"
    );
}

#[test]
fn exporter_tls_reaches_loadbalancing_backends_and_skip_verify_is_explicit() {
    let config = load_yaml(
        "
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  otlp:
    endpoint: backend:4317
    tls:
      insecure_skip_verify: true
  loadbalancing:
    protocol:
      otlp:
        tls:
          ca_file: /etc/spoor/ca.pem
          cert_file: /etc/spoor/client.pem
          key_file: /etc/spoor/client.key
          server_name_override: spoor.internal
    resolver:
      static:
        hostnames: [a, b:4319]
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp, loadbalancing]
",
        &[],
    )
    .expect("valid config");
    let Some(ExporterConfig::Otlp(otlp)) = config.exporters.get(&id("otlp")) else {
        panic!("otlp exporter missing");
    };
    assert!(otlp
        .tls
        .as_ref()
        .is_some_and(|tls| tls.insecure_skip_verify));
    let Some(ExporterConfig::LoadBalancing(balancing)) = config.exporters.get(&id("loadbalancing"))
    else {
        panic!("loadbalancing exporter missing");
    };
    let expected = ClientTlsConfig {
        ca_file: Some("/etc/spoor/ca.pem".into()),
        cert_file: Some("/etc/spoor/client.pem".into()),
        key_file: Some("/etc/spoor/client.key".into()),
        server_name: Some("spoor.internal".to_owned()),
        insecure_skip_verify: false,
    };
    assert_eq!(balancing.backends.len(), 2);
    for backend in &balancing.backends {
        assert!(backend.exporter.endpoint.starts_with("https://"));
        assert_eq!(backend.exporter.tls.as_ref(), Some(&expected));
    }
}
