//! OpenTelemetry Collector configs (tests/data/collector, after the Collector's own
//! examples and documentation) either load, or fail naming every unsupported component;
//! with those removed or renamed they load. Also: spoor's example and packaged configs,
//! and `--check-config`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use spoor::config::collector::{
    load_collector_config_with_env, CollectorConfig, ComponentId, ExporterConfig, ExtensionConfig,
    MemoryLimit, PolicyRule, ProcessorConfig, RoutingKey, StringValues,
};
use spoor::config::ConfigErrors;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/collector")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// The errors, each without its ` [file …]` origin suffix, sorted.
fn messages(errors: &ConfigErrors) -> Vec<String> {
    let mut messages: Vec<String> = errors
        .iter()
        .map(|error| {
            let text = error.to_string();
            match text.rfind(" [file ") {
                Some(index) => text[..index].to_owned(),
                None => text,
            }
        })
        .collect();
    messages.sort();
    messages
}

fn expect_errors(name: &str, expected: &[&str]) {
    let errors = load_collector_config_with_env(Some(&data(name)), &BTreeMap::new())
        .expect_err("unsupported components must be refused");
    let mut expected: Vec<String> = expected.iter().map(|line| (*line).to_owned()).collect();
    expected.sort();
    assert_eq!(messages(&errors), expected, "{name}");
}

const PPROF: &str =
    "extensions.pprof: unsupported extension type \"pprof\" (supported: basicauth, bearertokenauth, file_storage, health_check)";
const ZPAGES: &str =
    "extensions.zpages: unsupported extension type \"zpages\" (supported: basicauth, bearertokenauth, file_storage, health_check)";
const LOGGING: &str = "exporters.logging: unsupported exporter type \"logging\" (supported: debug, loadbalancing, otlp, otlphttp); the OpenTelemetry Collector replaced it by debug";

fn only_traces(pipeline: &str) -> String {
    format!("service.pipelines.{pipeline}: only traces pipelines are supported (found a {pipeline} pipeline); remove it or move its data elsewhere")
}

/// Edits an OpenTelemetry Collector config the way an operator would: remove what
/// spoor-collector does not support, rename what it supports under another name.
struct Edit {
    tree: Value,
}

impl Edit {
    fn open(name: &str) -> Edit {
        let text = std::fs::read_to_string(data(name)).unwrap();
        Edit {
            tree: serde_yaml::from_str(&text).unwrap(),
        }
    }

    fn section(&mut self, path: &str) -> &mut Value {
        let mut current = &mut self.tree;
        for part in path.split('.') {
            current = current.get_mut(part).unwrap();
        }
        current
    }

    /// Removes a component and every mention of it in `service`.
    fn remove(mut self, kind: &str, id: &str) -> Edit {
        self.section(kind).as_mapping_mut().unwrap().remove(id);
        self.replace_mentions(kind, id, None);
        self
    }

    fn remove_pipeline(mut self, id: &str) -> Edit {
        self.section("service.pipelines")
            .as_mapping_mut()
            .unwrap()
            .remove(id);
        self
    }

    /// Gives a component a supported type; its old settings go (they belong to the old
    /// type).
    fn rename(mut self, kind: &str, from: &str, to: &str) -> Edit {
        let components = self.section(kind).as_mapping_mut().unwrap();
        components.remove(from);
        components.insert(Value::from(to), Value::Null);
        self.replace_mentions(kind, from, Some(to));
        self
    }

    fn replace_mentions(&mut self, kind: &str, from: &str, to: Option<&str>) {
        let mut lists: Vec<&mut Value> = Vec::new();
        let Some(service) = self.tree.get_mut("service") else {
            return;
        };
        if kind == "extensions" {
            if let Some(list) = service.get_mut("extensions") {
                lists.push(list);
            }
        } else if let Some(Value::Mapping(pipelines)) = service.get_mut("pipelines") {
            for pipeline in pipelines.values_mut() {
                if let Some(list) = pipeline.get_mut(kind) {
                    lists.push(list);
                }
            }
        }
        for list in lists {
            let Value::Sequence(items) = list else {
                continue;
            };
            let kept: Vec<Value> = items
                .drain(..)
                .filter_map(|item| match item.as_str() {
                    Some(name) if name == from => to.map(Value::from),
                    _ => Some(item),
                })
                .collect();
            *items = kept;
        }
    }

    fn load(self, env: &BTreeMap<String, String>) -> CollectorConfig {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut file,
            serde_yaml::to_string(&self.tree).unwrap().as_bytes(),
        )
        .unwrap();
        load_collector_config_with_env(Some(file.path()), env)
            .unwrap_or_else(|errors| panic!("edited config should load:\n{errors}"))
    }
}

fn id(text: &str) -> ComponentId {
    ComponentId::parse(text).unwrap()
}

#[test]
fn local_example_names_each_unsupported_component_and_loads_once_renamed() {
    expect_errors(
        "otelcol-local.yaml",
        &[PPROF, ZPAGES, LOGGING, &only_traces("metrics")],
    );
    let config = Edit::open("otelcol-local.yaml")
        .remove("extensions", "pprof")
        .remove("extensions", "zpages")
        .rename("exporters", "logging", "debug")
        .remove_pipeline("metrics")
        .load(&BTreeMap::new());
    assert_eq!(config.pipelines[0].exporters, vec![id("debug")]);
    assert!(matches!(
        config.extensions.as_slice(),
        [(_, ExtensionConfig::HealthCheck(_))]
    ));
}

#[test]
fn demo_collector_example() {
    expect_errors(
        "otelcol-demo-collector.yaml",
        &[PPROF, ZPAGES, LOGGING, &only_traces("metrics")],
    );
    Edit::open("otelcol-demo-collector.yaml")
        .remove("extensions", "pprof")
        .remove("extensions", "zpages")
        .rename("exporters", "logging", "debug")
        .remove_pipeline("metrics")
        .load(&BTreeMap::new());
}

#[test]
fn tail_sampling_demo_names_everything_not_supported_yet_and_loads_without_it() {
    expect_errors(
        "otelcol-demo-tailsampling.yaml",
        &[
            "receivers.opencensus: unsupported receiver type \"opencensus\" (supported: jaeger, otlp, zipkin)",
            "exporters.prometheus: unsupported exporter type \"prometheus\" (supported: debug, loadbalancing, otlp, otlphttp)",
            LOGGING,
            "exporters.zipkin: unsupported exporter type \"zipkin\" (supported: debug, loadbalancing, otlp, otlphttp)",
            "exporters.jaeger_grpc: unsupported exporter type \"jaeger_grpc\" (supported: debug, loadbalancing, otlp, otlphttp)",
            PPROF,
            ZPAGES,
            &only_traces("metrics"),
        ],
    );
    let config = Edit::open("otelcol-demo-tailsampling.yaml")
        .remove("receivers", "opencensus")
        .remove("exporters", "prometheus")
        .remove("exporters", "zipkin")
        .remove("exporters", "jaeger_grpc")
        .rename("exporters", "logging", "debug")
        .remove("extensions", "pprof")
        .remove("extensions", "zpages")
        .remove_pipeline("metrics")
        .load(&BTreeMap::new());
    assert_eq!(
        config.pipelines[0].processors,
        vec![id("batch"), id("tail_sampling")]
    );
    let ProcessorConfig::TailSampling(tail) = &config.processors[&id("tail_sampling")] else {
        panic!("tail_sampling");
    };
    assert_eq!(tail.decision_wait, std::time::Duration::from_secs(10));
    assert_eq!(tail.num_traces, 100);
    assert_eq!(tail.policies[0].name, "test-policy-1");
    assert!(matches!(
        &tail.policies[0].rule,
        PolicyRule::StringAttribute { key, values: StringValues::Exact(values), invert_match: false }
            if key == "http.status_code" && values.contains("500")
    ));
}

#[test]
fn kubernetes_agent_and_collector_examples() {
    expect_errors("otelcol-k8s-agent.yaml", &[ZPAGES]);
    let agent = Edit::open("otelcol-k8s-agent.yaml")
        .remove("extensions", "zpages")
        .load(&BTreeMap::new());
    let ExporterConfig::Otlp(otlp) = &agent.exporters[&id("otlp")] else {
        panic!("otlp exporter");
    };
    assert_eq!(otlp.endpoint, "http://otel-collector.default:4317");
    assert_eq!((otlp.queue.num_consumers, otlp.queue.queue_size), (4, 100));
    assert_eq!(
        agent.processors[&id("memory_limiter")],
        ProcessorConfig::MemoryLimiter(spoor::config::collector::MemoryLimiterConfig {
            check_interval: std::time::Duration::from_secs(5),
            limit: MemoryLimit::Absolute {
                limit_bytes: 400 << 20,
                spike_bytes: 100 << 20,
            },
        })
    );
    assert!(agent
        .warnings
        .iter()
        .any(|warning| warning.contains("ballast_size_mib is ignored")));

    expect_errors("otelcol-k8s-collector.yaml", &[ZPAGES]);
    let collector = Edit::open("otelcol-k8s-collector.yaml")
        .remove("extensions", "zpages")
        .load(&BTreeMap::new());
    assert_eq!(collector.pipelines[0].id, id("traces/1"));
}

#[test]
fn documentation_example_with_named_instances() {
    expect_errors(
        "otelcol-docs-multiple-instances.yaml",
        &[PPROF, ZPAGES, &only_traces("logs"), &only_traces("metrics")],
    );
    let config = Edit::open("otelcol-docs-multiple-instances.yaml")
        .remove("extensions", "pprof")
        .remove("extensions", "zpages")
        .remove_pipeline("metrics")
        .remove_pipeline("logs")
        .load(&BTreeMap::new());
    let ids: Vec<String> = config.pipelines.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids, vec!["traces", "traces/2"]);
    assert_eq!(config.pipelines[1].receivers, vec![id("otlp/2")]);
    assert_eq!(config.pipelines[1].processors, vec![id("batch/test")]);
    assert_eq!(config.pipelines[1].exporters, vec![id("otlp/2")]);
}

#[test]
fn persistent_queue_example_through_file_storage() {
    expect_errors(
        "otelcol-persistent-queue.yaml",
        &[&only_traces("logs"), &only_traces("metrics")],
    );
    let config = Edit::open("otelcol-persistent-queue.yaml")
        .remove_pipeline("metrics")
        .remove_pipeline("logs")
        .load(&BTreeMap::new());
    let ExporterConfig::Otlp(otlp) = &config.exporters[&id("otlp")] else {
        panic!("otlp exporter");
    };
    let persistent = otlp.queue.persistent.as_ref().unwrap();
    assert_eq!(persistent.directory, Path::new("/var/lib/storage/otc/otlp"));
    assert!(
        persistent.fsync,
        "safe by default, unlike the OpenTelemetry Collector"
    );
}

#[test]
fn environment_variables_in_values() {
    let config = load_collector_config_with_env(
        Some(&data("otelcol-env-vars.yaml")),
        &env(&[
            ("BATCH_SIZE", "1024"),
            ("BATCH_TIMEOUT", "2s"),
            ("BACKEND_HOST", "tempo.example.com"),
            ("API_TOKEN", "s3cret"),
        ]),
    )
    .unwrap();
    let ProcessorConfig::Batch(batch) = &config.processors[&id("batch")] else {
        panic!("batch");
    };
    assert_eq!(batch.send_batch_size, Some(1024));
    assert_eq!(batch.timeout, std::time::Duration::from_secs(2));
    let ExporterConfig::OtlpHttp(http) = &config.exporters[&id("otlphttp")] else {
        panic!("otlphttp");
    };
    assert_eq!(http.traces_url, "https://tempo.example.com:4318/v1/traces");
    assert_eq!(
        http.headers,
        vec![
            ("authorization".to_owned(), "Bearer s3cret".to_owned()),
            ("x-literal".to_owned(), "costs $5".to_owned()),
        ]
    );
    let spoor::config::collector::ReceiverConfig::Otlp(otlp) = &config.receivers[&id("otlp")]
    else {
        panic!("otlp receiver");
    };
    assert_eq!(
        otlp.grpc.as_ref().unwrap().endpoint.to_string(),
        "0.0.0.0:4317"
    );

    // Unset variables become empty strings (as in the OpenTelemetry Collector) and are
    // reported; where that is not a valid value, the key is named.
    let errors =
        load_collector_config_with_env(Some(&data("otelcol-env-vars.yaml")), &BTreeMap::new())
            .unwrap_err();
    let messages = messages(&errors);
    assert!(
        messages.contains(
            &"processors.batch.send_batch_size: expected a whole number, got \"\"".to_owned()
        ),
        "{messages:#?}"
    );
}

#[test]
fn tempo_setup_loads_as_is() {
    let config =
        load_collector_config_with_env(Some(&data("tempo-distributed.yaml")), &BTreeMap::new())
            .unwrap();
    let ExporterConfig::Otlp(otlp) = &config.exporters[&id("otlp")] else {
        panic!("otlp exporter");
    };
    assert_eq!(
        otlp.headers,
        vec![("X-Scope-OrgID".to_owned(), "acme".to_owned())]
    );
    assert_eq!(config.telemetry.logs.level, "debug");
    assert_eq!(
        config
            .telemetry
            .metrics_address
            .map(|address| address.to_string()),
        Some("0.0.0.0:8888".to_owned())
    );
    assert!(matches!(
        config.processors[&id("memory_limiter")],
        ProcessorConfig::MemoryLimiter(spoor::config::collector::MemoryLimiterConfig {
            limit: MemoryLimit::Percentage {
                limit_percent: 75,
                spike_percent: 15
            },
            ..
        })
    ));
}

#[test]
fn spoor_example_and_packaged_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = load_collector_config_with_env(
        Some(&root.join("examples/collector.yaml")),
        &BTreeMap::new(),
    )
    .unwrap_or_else(|errors| panic!("examples/collector.yaml:\n{errors}"));
    assert_eq!(example.exporters.len(), 3);
    assert_eq!(example.processors.len(), 7);
    assert_eq!(example.receivers.len(), 3);
    let packaged = load_collector_config_with_env(
        Some(&root.join("packaging/collector.yaml")),
        &BTreeMap::new(),
    )
    .unwrap_or_else(|errors| panic!("packaging/collector.yaml:\n{errors}"));
    let ExporterConfig::Otlp(otlp) = &packaged.exporters[&id("otlp")] else {
        panic!("otlp exporter");
    };
    assert_eq!(otlp.endpoint, "http://127.0.0.1:4319");
    assert_eq!(
        otlp.queue.persistent.as_ref().unwrap().directory,
        Path::new("/var/lib/spoor-collector/queue/otlp")
    );
}

#[test]
fn check_config_flag_validates_and_exits() {
    let binary = env!("CARGO_BIN_EXE_spoor-collector");
    let valid = Command::new(binary)
        .arg("--config")
        .arg(data("tempo-distributed.yaml"))
        .arg("--check-config")
        .env_remove("SPOOR_CONFIG")
        .output()
        .unwrap();
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&valid.stdout).trim(),
        "configuration is valid"
    );

    let invalid = Command::new(binary)
        .arg("--check-config")
        .env("SPOOR_CONFIG", data("otelcol-local.yaml"))
        .output()
        .unwrap();
    assert!(!invalid.status.success());
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    for needle in [PPROF, ZPAGES, LOGGING] {
        assert!(stderr.contains(needle), "missing {needle:?} in {stderr}");
    }
}

#[test]
fn loadbalancing_example_loads_with_either_resolver_and_others_are_named() {
    let config =
        load_collector_config_with_env(Some(&data("otelcol-loadbalancing.yaml")), &BTreeMap::new())
            .unwrap_or_else(|errors| panic!("otelcol-loadbalancing.yaml:\n{errors}"));
    let ExporterConfig::LoadBalancing(lb) = &config.exporters[&id("loadbalancing")] else {
        panic!("loadbalancing exporter");
    };
    assert_eq!(lb.routing_key, RoutingKey::TraceId);
    let endpoints: Vec<&str> = lb
        .backends
        .iter()
        .map(|backend| backend.exporter.endpoint.as_str())
        .collect();
    assert_eq!(
        endpoints,
        [
            "https://backend-1:4317",
            "https://backend-2:4317",
            "https://backend-3:4317",
            "https://backend-4:4317"
        ]
    );
    assert!(lb
        .backends
        .iter()
        .all(|backend| backend.exporter.timeout == std::time::Duration::from_secs(1)));

    // The commented-out DNS resolver of the same example loads in place of the static
    // one; the Kubernetes resolver is named as unsupported.
    let load_with_resolver = |resolver: &str| {
        let mut edit = Edit::open("otelcol-loadbalancing.yaml");
        *edit.section("exporters.loadbalancing.resolver") = serde_yaml::from_str(resolver).unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut file,
            serde_yaml::to_string(&edit.tree).unwrap().as_bytes(),
        )
        .unwrap();
        load_collector_config_with_env(Some(file.path()), &BTreeMap::new())
    };
    let config =
        load_with_resolver("{dns: {hostname: otelcol-headless.observability.svc.cluster.local}}")
            .unwrap_or_else(|errors| panic!("the dns resolver:\n{errors}"));
    let ExporterConfig::LoadBalancing(lb) = &config.exporters[&id("loadbalancing")] else {
        panic!("loadbalancing exporter");
    };
    let dns = lb.dns.as_ref().expect("a dns resolver");
    assert_eq!(
        (dns.hostname.as_str(), dns.port),
        ("otelcol-headless.observability.svc.cluster.local", 4317)
    );
    assert!(lb.backends.is_empty());
    let errors = load_with_resolver(
        "{dns: {hostname: otelcol-headless.observability.svc.cluster.local}, k8s: {service: lb-svc.kube-public}}",
    )
    .expect_err("the k8s resolver is not supported");
    assert_eq!(
        messages(&errors),
        ["exporters.loadbalancing.resolver.k8s: unsupported resolver \"k8s\" (supported: static, dns)"]
    );
}
