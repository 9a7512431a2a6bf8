//! Search, tags, tag values and TraceQL metrics through the real server binary:
//! every endpoint's JSON against a stored snapshot (tests/data/api/), decoded with the
//! field types Grafana and tempo-cli use, answered first from the head and then, after
//! a flush and a restart, from blocks alone.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test --test server_search_api` rewrites the snapshots;
//! review the diff before committing.
#![allow(clippy::unwrap_used)]

mod common;
mod server_search_support;

use std::path::PathBuf;

use common::{request, TestServer};
use serde::de::DeserializeOwned;
use server_search_support::*;

const TENANT: &str = "shop";

#[derive(Debug, Clone, Copy)]
enum Shape {
    Search,
    TagsV1,
    TagsV2,
    ValuesV1,
    ValuesV2,
    Range,
    Instant,
}

fn window() -> String {
    format!("start={}&end={}", BASE_SECONDS - 60, BASE_SECONDS + 600)
}

fn metrics_window() -> String {
    format!("start={}&end={}", BASE_SECONDS, BASE_SECONDS + 120)
}

/// Every endpoint, with the parameter forms clients send.
fn cases() -> Vec<(&'static str, String, Shape)> {
    let q = |text: &str| encode(text);
    let w = window();
    let mw = metrics_window();
    vec![
        ("search_all", format!("/api/search?q={}&{w}", q("{}")), Shape::Search),
        (
            "search_errors",
            format!("/api/search?q={}&{w}&spss=5&limit=10", q("{ status = error }")),
            Shape::Search,
        ),
        (
            "search_structural",
            format!(
                "/api/search?q={}&{w}",
                q("{ resource.service.name = \"frontend\" } >> { span.db.system = \"postgresql\" && status = error }")
            ),
            Shape::Search,
        ),
        (
            "search_select",
            format!(
                "/api/search?q={}&{w}",
                q("{ span.http.status_code >= 500 } | select(span.http.route, duration, span.tags, span.sampled.ratio)")
            ),
            Shape::Search,
        ),
        (
            "search_by",
            format!(
                "/api/search?q={}&{w}&limit=2",
                q("{ } | by(resource.service.name) | count() > 0")
            ),
            Shape::Search,
        ),
        (
            "search_legacy_tags",
            format!("/api/search?tags={}&minDuration=100ms&{w}", q("http.route=/cart")),
            Shape::Search,
        ),
        ("search_recent", "/api/search?limit=2".to_string(), Shape::Search),
        ("tags_v1", "/api/search/tags".to_string(), Shape::TagsV1),
        (
            "tags_v1_intrinsic",
            "/api/search/tags?scope=intrinsic".to_string(),
            Shape::TagsV1,
        ),
        ("tags_v2", "/api/v2/search/tags".to_string(), Shape::TagsV2),
        (
            "tags_v2_resource_q",
            format!(
                "/api/v2/search/tags?scope=resource&q={}",
                q("{ span.db.system = \"postgresql\" }")
            ),
            Shape::TagsV2,
        ),
        (
            "tags_v2_window_limit",
            format!("/api/v2/search/tags?{w}&limit=2"),
            Shape::TagsV2,
        ),
        (
            "values_v1",
            "/api/search/tag/http.route/values".to_string(),
            Shape::ValuesV1,
        ),
        (
            "values_v1_status",
            "/api/search/tag/status.code/values".to_string(),
            Shape::ValuesV1,
        ),
        (
            "values_v2_service",
            "/api/v2/search/tag/resource.service.name/values".to_string(),
            Shape::ValuesV2,
        ),
        (
            "values_v2_span_name_q",
            format!(
                "/api/v2/search/tag/span%3Aname/values?q={}&{w}",
                q("{ resource.service.name = \"db\" }")
            ),
            Shape::ValuesV2,
        ),
        (
            "values_v2_int",
            "/api/v2/search/tag/span.http.status_code/values".to_string(),
            Shape::ValuesV2,
        ),
        (
            "values_v2_unscoped_bool",
            "/api/v2/search/tag/.db.cached/values".to_string(),
            Shape::ValuesV2,
        ),
        (
            "values_v2_kind",
            "/api/v2/search/tag/kind/values".to_string(),
            Shape::ValuesV2,
        ),
        (
            "values_v2_event_limit",
            "/api/v2/search/tag/event.cache.key/values?limit=3".to_string(),
            Shape::ValuesV2,
        ),
        (
            "values_v2_duration",
            "/api/v2/search/tag/duration/values".to_string(),
            Shape::ValuesV2,
        ),
        (
            "metrics_count_by_service",
            format!(
                "/api/metrics/query_range?q={}&{mw}&step=60s",
                q("{ } | count_over_time() by (resource.service.name)")
            ),
            Shape::Range,
        ),
        (
            "metrics_error_rate",
            format!(
                "/api/metrics/query_range?q={}&{mw}&step=1m&exemplars=0",
                q("{ status = error } | rate()")
            ),
            Shape::Range,
        ),
        (
            "metrics_quantiles",
            format!(
                "/api/metrics/query_range?q={}&{mw}&step=120&exemplars=0",
                q("{ kind = server } | quantile_over_time(duration, 0.5, 0.9)")
            ),
            Shape::Range,
        ),
        (
            "metrics_instant",
            format!(
                "/api/metrics/query?q={}&{mw}",
                q("{ } | count_over_time() by (name)")
            ),
            Shape::Instant,
        ),
    ]
}

fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/api")
        .join(format!("{name}.json"))
}

fn check_snapshot(name: &str, actual: &serde_json::Value) {
    let path = snapshot_path(name);
    let pretty = format!("{}\n", serde_json::to_string_pretty(actual).unwrap());
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pretty).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; run with UPDATE_SNAPSHOTS=1 and review it",
            path.display()
        )
    });
    let expected: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(
        expected == *actual,
        "{name} differs from {}:\n--- expected\n{stored}\n--- actual\n{pretty}",
        path.display()
    );
}

fn decode<T: DeserializeOwned>(name: &str, body: &serde_json::Value) -> T {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("{name} does not decode as its client expects: {e}\n{body}"))
}

/// Decodes a response with the types of the clients that read it.
fn decode_as_clients(name: &str, shape: Shape, body: &serde_json::Value) {
    match shape {
        Shape::Search => {
            let grafana: grafana::SearchResponse = decode(name, body);
            let _: strict::SearchResponse = decode(name, body);
            for trace in &grafana.traces {
                assert!(trace.start_time_unix_nano.parse::<u64>().is_ok(), "{name}");
                assert!(!trace.trace_id.is_empty());
                if let Some(first) = &trace.span_set {
                    // spanSet is spanSets[0].
                    assert_eq!(first.matched, trace.span_sets[0].matched);
                }
            }
        }
        Shape::TagsV1 => {
            let _: strict::SearchTagsResponse = decode(name, body);
        }
        Shape::TagsV2 => {
            let _: strict::SearchTagsV2Response = decode(name, body);
        }
        Shape::ValuesV1 => {
            let _: strict::SearchTagValuesResponse = decode(name, body);
        }
        Shape::ValuesV2 => {
            let _: strict::SearchTagValuesV2Response = decode(name, body);
        }
        Shape::Range => {
            let response: strict::QueryRangeResponse = decode(name, body);
            for series in &response.series {
                for sample in &series.samples {
                    assert!(sample.timestamp_ms.parse::<i64>().is_ok());
                }
            }
        }
        Shape::Instant => {
            let _: strict::QueryInstantResponse = decode(name, body);
        }
    }
}

fn without_metrics(mut body: serde_json::Value) -> serde_json::Value {
    if let Some(object) = body.as_object_mut() {
        object.remove("metrics");
    }
    body
}

async fn ingest(
    server: &TestServer,
    tenant: &str,
    batches: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
) {
    let mut client = server.grpc_client().await;
    let mut grpc_request = tonic::Request::new(request(batches));
    grpc_request
        .metadata_mut()
        .insert("x-scope-orgid", tenant.parse().unwrap());
    client.export(grpc_request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_snapshots_from_the_head_and_from_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut server = TestServer::new(&data);
    server.start().await;
    ingest(&server, TENANT, shop()).await;

    let mut from_head = Vec::new();
    for (name, path, shape) in cases() {
        let body = get_json(&server, &path, Some(TENANT)).await;
        decode_as_clients(name, shape, &body);
        check_snapshot(name, &body);
        from_head.push((name, path, body));
    }
    assert!(server.sigterm().success());

    // Tiny blocks: the replayed head is cut and flushed, then a restart reads blocks only.
    let flushing = |data: &std::path::Path| {
        TestServer::new(data)
            .env("SPOOR_HEAD__MAX_BLOCK_DURATION", "1s")
            .env("SPOOR_HEAD__TRACE_IDLE", "1s")
    };
    let mut server = flushing(&data);
    server.start().await;
    wait_flushed(&server).await;
    assert!(server.sigterm().success());
    let mut server = flushing(&data);
    server.start().await;

    for (name, path, head_body) in from_head {
        let body = get_json(&server, &path, Some(TENANT)).await;
        assert_eq!(
            without_metrics(body.clone()),
            without_metrics(head_body),
            "{name} from blocks differs from the head answer"
        );
        if path.starts_with("/api/search?q=") {
            let metrics = &body["metrics"];
            assert!(
                metrics["totalBlocks"].as_u64().unwrap_or(0) >= 1,
                "{name}: {body}"
            );
            assert!(metrics["inspectedBytes"].is_string(), "{name}: {body}");
        }
    }
}

/// The type checks above would be worthless if the decoders were lenient: a number
/// where Grafana expects a string must fail, and so must an unknown field for the
/// strict clients.
#[test]
fn client_decoders_reject_type_and_field_mismatches() {
    let good = serde_json::json!({
        "traces": [{
            "traceID": "abc",
            "startTimeUnixNano": "1700000000000000000",
            "durationMs": 12,
            "spanSets": [{"spans": [{"spanID": "01", "durationNanos": "5"}], "matched": 1}]
        }],
        "metrics": {"inspectedBytes": "10"}
    });
    let _: grafana::SearchResponse = serde_json::from_value(good.clone()).unwrap();
    let _: strict::SearchResponse = serde_json::from_value(good.clone()).unwrap();

    let mut number_start = good.clone();
    number_start["traces"][0]["startTimeUnixNano"] =
        serde_json::json!(1_700_000_000_000_000_000u64);
    assert!(serde_json::from_value::<grafana::SearchResponse>(number_start).is_err());

    let mut string_duration = good.clone();
    string_duration["traces"][0]["durationMs"] = serde_json::json!("12");
    assert!(serde_json::from_value::<grafana::SearchResponse>(string_duration).is_err());

    let mut number_nanos = good.clone();
    number_nanos["traces"][0]["spanSets"][0]["spans"][0]["durationNanos"] = serde_json::json!(5);
    assert!(serde_json::from_value::<grafana::SearchResponse>(number_nanos).is_err());

    let mut unknown = good.clone();
    unknown["traces"][0]["promLabels"] = serde_json::json!("x");
    assert!(serde_json::from_value::<grafana::SearchResponse>(unknown.clone()).is_ok());
    assert!(serde_json::from_value::<strict::SearchResponse>(unknown).is_err());

    let range = serde_json::json!({
        "series": [{"labels": [], "promLabels": "{}", "samples": []}],
        "metrics": {}
    });
    assert!(serde_json::from_value::<strict::QueryRangeResponse>(range).is_err());
    let number_timestamp = serde_json::json!({
        "series": [{"samples": [{"value": 1.0, "timestampMs": 5}]}],
        "metrics": {}
    });
    assert!(serde_json::from_value::<strict::QueryRangeResponse>(number_timestamp).is_err());
}
