#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rand::SeedableRng;

use super::remote_write::WriteRequest;
use super::*;
use crate::config::{RemoteWriteConfig, ServerConfig};
use crate::loadgen::{make_trace, CALL_GRAPH};
use crate::otlp::{OtlpAnyValue, OtlpKeyValue, OtlpValue};
use crate::otlp::{OtlpResource, OtlpScopeSpans, OtlpStatus};

fn config() -> GeneratorConfig {
    let mut config = crate::config::load_server_config(None, &Default::default())
        .map(|config: ServerConfig| config.metrics_generator)
        .unwrap();
    config.service_graphs.wait = Duration::from_millis(50);
    config
}

fn start(config: GeneratorConfig) -> Generator {
    let (generator, _thread) = Generator::start(config, Arc::new(ServerMetrics::new())).unwrap();
    generator
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Every series of the single tenant as `name{labels}` → value, with the label names
/// given and histograms as `_count`.
fn series(generator: &Generator) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (_, samples) in generator.snapshot() {
        for sample in samples {
            let labels: Vec<String> = sample
                .labels
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            let (suffix, value) = match sample.value {
                SampleValue::Counter(value) => ("_total", value),
                SampleValue::Histogram { count, .. } => ("_count", count as f64),
            };
            out.insert(
                format!("{}{suffix}{{{}}}", sample.family.name, labels.join(",")),
                value,
            );
        }
    }
    out
}

fn attr(key: &str, value: &str) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.into(),
        value: Some(OtlpAnyValue {
            value: Some(OtlpValue::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn span(name: &str, kind: i32, id: u8, parent: Option<u8>) -> OtlpSpan {
    let start = now_ns() - 1_000_000_000;
    OtlpSpan {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 250_000_000,
        ..Default::default()
    }
}

fn batch(service: &str, spans: Vec<OtlpSpan>) -> OtlpResourceSpans {
    OtlpResourceSpans {
        resource: Some(OtlpResource {
            attributes: vec![attr("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![OtlpScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

#[test]
fn the_load_generators_call_graph_comes_out_as_edges() {
    let generator = start(config());
    let tenant = TenantId::single();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    let traces = 50u64;
    let mut failed = 0;
    for _ in 0..traces {
        let trace = make_trace(&mut rng, now_ns());
        failed += u64::from(trace[0].scope_spans[0].spans[0].status.is_some());
        generator.process(&tenant, &trace);
    }
    let series = series(&generator);
    for (client, server, connection_type, fails_with_trace) in CALL_GRAPH {
        let labels = match connection_type {
            "" => format!("client={client},server={server}"),
            kind => format!("client={client},server={server},connection_type={kind}"),
        };
        let requests = format!("traces_service_graph_request_total{{{labels}}}");
        assert_eq!(
            series.get(&requests),
            Some(&(traces as f64)),
            "{requests} in {series:#?}"
        );
        let failed_edges = format!("traces_service_graph_request_failed_total{{{labels}}}");
        let expected = if fails_with_trace { failed } else { 0 };
        assert_eq!(series.get(&failed_edges), Some(&(expected as f64)));
        let histogram = format!("traces_service_graph_request_server_seconds_count{{{labels}}}");
        assert_eq!(series.get(&histogram), Some(&(traces as f64)));
    }
    let edges = series
        .keys()
        .filter(|name| name.starts_with("traces_service_graph_request_total"))
        .count();
    assert_eq!(edges, CALL_GRAPH.len(), "no other edges: {series:#?}");
    // Every span paired right away: nothing waits, nothing is unpaired later.
    std::thread::sleep(Duration::from_millis(80));
    generator.maintain(true);
    assert!(!series_names(&generator).any(|name| name.contains("unpaired")));
    let calls = "traces_spanmetrics_calls_total{service=checkout,span_name=payment.Charge,\
                 span_kind=SPAN_KIND_CLIENT,status_code=STATUS_CODE_UNSET}";
    assert_eq!(series.get(calls), Some(&(traces as f64)));
}

fn series_names(generator: &Generator) -> impl Iterator<Item = String> {
    series(generator).into_keys()
}

#[test]
fn halves_pair_in_either_order_and_expire_into_virtual_nodes_or_unpaired() {
    let generator = start(config());
    let tenant = TenantId::single();
    // The server half first, then its client.
    generator.process(&tenant, &[batch("api", vec![span("GET", 2, 2, Some(1))])]);
    generator.process(&tenant, &[batch("web", vec![span("GET", 3, 1, None)])]);
    // A client calling an uninstrumented service it names, and one naming nobody.
    let mut external = span("charge", 3, 3, None);
    external.attributes.push(attr("peer.service", "stripe"));
    let mut failing = span("lookup", 3, 4, None);
    failing.status = Some(OtlpStatus {
        code: 2,
        message: "timeout".into(),
    });
    generator.process(&tenant, &[batch("api", vec![external, failing])]);
    // A server span whose caller never reports.
    generator.process(
        &tenant,
        &[batch("worker", vec![span("job", 5, 5, Some(9))])],
    );
    let before = series(&generator);
    assert_eq!(
        before.get("traces_service_graph_request_total{client=web,server=api}"),
        Some(&1.0)
    );
    assert!(!before.keys().any(|name| name.contains("stripe")));

    std::thread::sleep(Duration::from_millis(80));
    generator.maintain(false);
    let after = series(&generator);
    assert_eq!(
        after.get(
            "traces_service_graph_request_total{client=api,server=stripe,connection_type=virtual_node}"
        ),
        Some(&1.0)
    );
    assert_eq!(
        after.get("traces_service_graph_unpaired_spans_total{client=api}"),
        Some(&1.0)
    );
    assert_eq!(
        after.get("traces_service_graph_unpaired_spans_total{server=worker}"),
        Some(&1.0)
    );
}

#[test]
fn a_full_edge_store_drops_and_counts_new_halves() {
    let mut config = config();
    config.service_graphs.max_items = 2;
    let generator = start(config);
    let tenant = TenantId::single();
    let spans = (1..=4).map(|id| span("call", 3, id, None)).collect();
    generator.process(&tenant, &[batch("web", spans)]);
    assert_eq!(
        series(&generator).get("traces_service_graph_dropped_spans_total{client=web}"),
        Some(&2.0)
    );
}

#[test]
fn a_flood_of_span_names_stays_within_the_series_limit_and_is_counted() {
    let mut config = config();
    config.defaults.max_active_series = 400;
    let generator = start(config);
    let tenant = TenantId::single();
    let spans: Vec<OtlpSpan> = (0..1000)
        .map(|n| span(&format!("GET /users/{n}"), 1, 1, None))
        .collect();
    generator.process(&tenant, &[batch("web", spans)]);
    let state = generator.inner.state.lock();
    let budget = &state.tenants[&tenant].budget;
    // A span-metrics series is calls + size + a 14-bucket histogram = 19 series.
    assert_eq!(budget.active, 400 / 19 * 19);
    assert_eq!(budget.limited, 1000 - 400 / 19);
    drop(state);
    // What an operator sees: the spans left out, on /metrics.
    let exposed = generator.inner.metrics.encode();
    let limited = format!(
        "spoor_generator_series_limited_total{{tenant=\"single-tenant\"}} {}",
        1000 - 400 / 19
    );
    assert!(exposed.contains(&limited), "{exposed}");
    assert!(exposed.contains("spoor_generator_active_series{tenant=\"single-tenant\"} 399"));
}

#[test]
fn stale_series_are_forgotten_and_return_their_budget() {
    let mut config = config();
    config.stale_after = Duration::ZERO;
    let generator = start(config);
    let tenant = TenantId::single();
    generator.process(&tenant, &[batch("web", vec![span("a", 1, 1, None)])]);
    // The generator clock counts whole seconds; a series touched in an earlier second
    // is older than `stale_after = 0`.
    std::thread::sleep(Duration::from_millis(1100));
    generator.maintain(true);
    assert!(series(&generator).is_empty());
    assert_eq!(
        generator.inner.state.lock().tenants[&tenant].budget.active,
        0
    );
}

#[test]
fn old_spans_are_left_out_and_disabled_tenants_are_skipped() {
    let mut config = config();
    let quiet = TenantId::new("quiet").unwrap();
    config.per_tenant.insert(
        quiet.clone(),
        GeneratorTenantConfig {
            enabled: false,
            ..config.defaults.clone()
        },
    );
    let generator = start(config);
    let mut old = span("a", 1, 1, None);
    old.start_time_unix_nano -= 3_600_000_000_000;
    old.end_time_unix_nano -= 3_600_000_000_000;
    generator.process(&TenantId::single(), &[batch("web", vec![old])]);
    assert!(series(&generator).is_empty());
    generator.submit(&quiet, vec![batch("web", vec![span("a", 1, 1, None)])]);
    generator.stop();
    assert!(!generator.inner.state.lock().tenants.contains_key(&quiet));
}

#[test]
fn dimensions_become_sanitized_labels() {
    let mut config = config();
    config.span_metrics.dimensions = vec!["http.route".into(), "service".into()];
    config.service_graphs.dimensions = vec!["deployment.environment".into()];
    config.service_graphs.enable_client_server_prefix = true;
    let generator = start(config);
    let tenant = TenantId::single();
    let mut client = span("GET", 3, 1, None);
    client.attributes.push(attr("http.route", "/users/{id}"));
    client.attributes.push(attr("service", "shadowed"));
    let mut web = batch("web", vec![client]);
    web.resource
        .as_mut()
        .unwrap()
        .attributes
        .push(attr("deployment.environment", "prod"));
    generator.process(
        &tenant,
        &[web, batch("api", vec![span("GET", 2, 2, Some(1))])],
    );
    let series = series(&generator);
    assert!(series.contains_key(
        "traces_spanmetrics_calls_total{service=web,span_name=GET,span_kind=SPAN_KIND_CLIENT,\
         status_code=STATUS_CODE_UNSET,http_route=/users/{id},__service=shadowed}"
    ));
    assert!(series.contains_key(
        "traces_service_graph_request_total{client=web,server=api,client_deployment_environment=prod}"
    ));
}

#[test]
fn openmetrics_text_groups_families_and_labels_the_tenant() {
    let generator = start(config());
    for tenant in ["a", "b"] {
        let tenant = TenantId::new(tenant).unwrap();
        generator.process(
            &tenant,
            &[batch("web", vec![span("GET \"x\"", 2, 1, None)])],
        );
    }
    let mut text = String::new();
    generator.encode_openmetrics(&mut text);
    let type_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
    let mut unique = type_lines.clone();
    unique.dedup();
    assert_eq!(type_lines, unique, "each family once:\n{text}");
    assert!(text.contains("# TYPE traces_spanmetrics_latency histogram"));
    assert!(text.contains(
        "traces_spanmetrics_calls_total{service=\"web\",span_name=\"GET \\\"x\\\"\",\
         span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_UNSET\",tenant=\"b\"} 1"
    ));
    assert!(text.contains("le=\"0.128\"} 0\n"), "{text}");
    assert!(text.contains("le=\"+Inf\"} 1\n"));
    assert!(text.contains(
        "traces_service_graph_request_total{client=\"user\",server=\"web\",\
         connection_type=\"virtual_node\",tenant=\"a\"} 1"
    ));
}

#[test]
fn remote_write_requests_are_snappy_protobuf_with_sorted_labels() {
    let generator = start(config());
    let tenant = TenantId::single();
    generator.process(&tenant, &[batch("web", vec![span("GET", 2, 1, None)])]);
    let config = RemoteWriteConfig {
        endpoints: Vec::new(),
        interval: Duration::from_secs(15),
        timeout: Duration::from_secs(1),
        external_labels: BTreeMap::from([("cluster".to_owned(), "eu1".to_owned())]),
        inject_tenant_id_as: Some("org".to_owned()),
    };
    let (_, samples) = generator.snapshot().pop().unwrap();
    let request = remote_write::write_request(&config, "host-1", &tenant, &samples, 0);
    let body = remote_write::compress(&request).unwrap();
    let decoded = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let request = WriteRequest::decode(decoded.as_slice()).unwrap();
    for series in &request.timeseries {
        let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(series.labels.iter().all(|l| !l.value.is_empty()));
        assert!(names.contains(&"cluster") && names.contains(&"org"));
    }
    let calls = request
        .timeseries
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == "traces_spanmetrics_calls_total")
        })
        .unwrap();
    assert_eq!(calls.samples[0].value, 1.0);
    let buckets = request
        .timeseries
        .iter()
        .filter(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == "traces_spanmetrics_latency_bucket")
        })
        .count();
    assert_eq!(buckets, 15);
}
