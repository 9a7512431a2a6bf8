//! The search API against a real server: refusals of bad input (400 with a message
//! naming the parameter), tenant isolation on every endpoint, and tempo-vulture's
//! invariant (the sum of `count_over_time` equals the sum of search `matched`) for
//! traces split between the head and blocks.
#![allow(clippy::unwrap_used)]

mod common;
mod server_search_support;

use std::time::{Duration, Instant};

use common::{request, TestServer};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use server_search_support::*;

async fn ingest(server: &TestServer, tenant: &str, batches: Vec<ResourceSpans>) {
    let mut client = server.grpc_client().await;
    let mut grpc_request = tonic::Request::new(request(batches));
    grpc_request
        .metadata_mut()
        .insert("x-scope-orgid", tenant.parse().unwrap());
    client.export(grpc_request).await.unwrap();
}

fn q(text: &str) -> String {
    encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_parameter_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(&dir.path().join("server"));
    server.start().await;
    ingest(&server, "shop", shop()).await;

    let cases: Vec<(String, &str)> = vec![
        (
            format!("/api/search?q={}", q("{ span.a = ")),
            "parse error at 1:",
        ),
        (
            format!("/api/search?q={}", q("{ span.a =~ \"(a{1000}){1000}\" }")),
            "invalid regex",
        ),
        (
            format!("/api/search?q={}", q("{ span.a =~ \"[\" }")),
            "invalid regex",
        ),
        (
            format!("/api/search?q={}&limit=0", q("{}")),
            "invalid limit",
        ),
        ("/api/search?limit=lots".into(), "invalid limit"),
        ("/api/search?limit=262145".into(), "invalid limit"),
        ("/api/search?spss=101".into(), "invalid spss"),
        ("/api/search?spss=x".into(), "invalid spss"),
        ("/api/search?start=200&end=100".into(), "invalid time range"),
        ("/api/search?start=100&end=100".into(), "invalid time range"),
        (
            "/api/search?start=1&end=700000".into(),
            "maximum search duration",
        ),
        (
            "/api/search?start=yesterday&end=100".into(),
            "invalid start",
        ),
        (
            "/api/search?start=1700000000000000000&end=1700000000000000001".into(),
            "invalid start",
        ),
        ("/api/search?start=100&end=soon".into(), "invalid end"),
        (
            format!("/api/search?q={}&tags=a%3Db", q("{}")),
            "q and tags",
        ),
        ("/api/search?tags=a%3D%22x".into(), "invalid tags"),
        ("/api/search?minDuration=fast".into(), "invalid minDuration"),
        (format!("/api/search?q={}", q("{ } | rate()")), "search"),
        ("/api/search/tags?scope=everything".into(), "invalid scope"),
        ("/api/v2/search/tags?scope=spans".into(), "invalid scope"),
        (
            "/api/v2/search/tags?start=5&end=1".into(),
            "invalid time range",
        ),
        ("/api/v2/search/tags?limit=-1".into(), "invalid limit"),
        (
            "/api/search/tag/http.route/values?end=x".into(),
            "invalid end",
        ),
        (
            "/api/v2/search/tag/a%20b/values".into(),
            "please provide a valid tagName",
        ),
        (
            "/api/v2/search/tag/1/values".into(),
            "please provide a valid tagName",
        ),
        (
            "/api/v2/search/tag/span.x/values?maxStaleValues=x".into(),
            "invalid maxStaleValues",
        ),
        ("/api/metrics/query_range?since=1h".into(), "invalid q"),
        (
            format!("/api/metrics/query_range?q={}", q("{ status = error }")),
            "metrics",
        ),
        (
            format!(
                "/api/metrics/query_range?q={}&start=2&end=1",
                q("{} | rate()")
            ),
            "invalid time range",
        ),
        (
            format!(
                "/api/metrics/query_range?q={}&start=1600000000&end=1700000000",
                q("{} | rate()")
            ),
            "maximum metrics duration",
        ),
        (
            format!(
                "/api/metrics/query_range?q={}&start=1699990000&end=1700000000&step=100ms",
                q("{} | rate()")
            ),
            "invalid step",
        ),
        (
            format!("/api/metrics/query_range?q={}&step=1d", q("{} | rate()")),
            "invalid step",
        ),
        (
            format!("/api/metrics/query_range?q={}&start=noon", q("{} | rate()")),
            "invalid start",
        ),
        (
            format!(
                "/api/metrics/query_range?q={}&maxSeries=x",
                q("{} | rate()")
            ),
            "invalid maxSeries",
        ),
        (
            format!("/api/metrics/query?q={}", q("{ | rate()")),
            "parse error",
        ),
        (
            format!("/api/metrics/query?q={}&since=forever", q("{} | rate()")),
            "invalid since",
        ),
    ];
    for (path, message) in &cases {
        let (status, body) = get(&server, path, Some("shop")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(message), "{path}: {body:?} lacks {message:?}");
    }

    // A tenant header that is not a tenant.
    let (status, body) = get(&server, "/api/search", Some("a|b")).await;
    assert_eq!(status, 400, "{body}");

    // Empty parameters are absent (tempo-cli sends `mode=` and friends).
    let (status, body) = get(
        &server,
        "/api/search?limit=&spss=&start=&end=&q=",
        Some("shop"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Patterns that backtracking engines choke on are linear here: answered promptly.
    let started = Instant::now();
    let (status, body) = get(
        &server,
        &format!(
            "/api/search?q={}",
            q("{ span.http.route =~ \"(a+)+(b+)+(c+)+$\" || name =~ \"(.*a){12}\" }")
        ),
        Some("shop"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_data_on_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(&dir.path().join("server"))
        .env("SPOOR_HEAD__MAX_BLOCK_DURATION", "1s")
        .env("SPOOR_HEAD__TRACE_IDLE", "1s");
    server.start().await;
    // Half of the shop's traces in blocks, half in the head; the other tenant has one
    // trace with distinct values.
    ingest(&server, "shop", (1..=3).flat_map(shop_trace).collect()).await;
    wait_flushed(&server).await;
    ingest(&server, "shop", (4..=6).flat_map(shop_trace).collect()).await;
    let mut other = shop_trace(50);
    for batch in &mut other {
        for attribute in &mut batch.resource.as_mut().unwrap().attributes {
            if attribute.key == "service.name" {
                *attribute = kv("service.name", s("other-service"));
            }
        }
    }
    ingest(&server, "other", other).await;

    let window = format!("start={}&end={}", BASE_SECONDS - 60, BASE_SECONDS + 3600);
    let metrics_window = format!("start={}&end={}", BASE_SECONDS, BASE_SECONDS + 3600);
    let services = |body: &serde_json::Value, pointer: &str| -> Vec<String> {
        let mut found: Vec<String> = body
            .pointer(pointer)
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| {
                        v.get("value")
                            .and_then(|v| v.as_str())
                            .or_else(|| v.as_str())
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    };

    for (tenant, traces, service_values) in [
        (Some("shop"), 6, vec!["cart", "db", "frontend"]),
        (Some("other"), 1, vec!["other-service"]),
        (None, 0, vec![]),
    ] {
        let search = get_json(
            &server,
            &format!("/api/search?q={}&{window}", q("{}")),
            tenant,
        )
        .await;
        let found = search["traces"].as_array().map_or(0, Vec::len);
        assert_eq!(found, traces, "{tenant:?}: {search}");
        let recent = get_json(&server, "/api/search", tenant).await;
        assert_eq!(
            recent["traces"].as_array().map_or(0, Vec::len),
            traces,
            "{tenant:?}"
        );

        let v2 = get_json(
            &server,
            "/api/v2/search/tag/resource.service.name/values",
            tenant,
        )
        .await;
        assert_eq!(
            services(&v2, "/tagValues"),
            service_values,
            "{tenant:?}: {v2}"
        );
        let v1 = get_json(&server, "/api/search/tag/service.name/values", tenant).await;
        assert_eq!(
            services(&v1, "/tagValues"),
            service_values,
            "{tenant:?}: {v1}"
        );

        let tags_v1 = get_json(&server, "/api/search/tags", tenant).await;
        let names = tags_v1["tagNames"].as_array().map_or(0, Vec::len);
        assert_eq!(names > 0, traces > 0, "{tenant:?}: {tags_v1}");
        let tags_v2 = get_json(&server, "/api/v2/search/tags", tenant).await;
        let scopes: Vec<&str> = tags_v2["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            scopes.contains(&"resource"),
            traces > 0,
            "{tenant:?}: {tags_v2}"
        );
        assert!(scopes.contains(&"intrinsic"));

        let range = get_json(
            &server,
            &format!(
                "/api/metrics/query_range?q={}&{metrics_window}&step=60s",
                q("{} | count_over_time()")
            ),
            tenant,
        )
        .await;
        let total: f64 = range["series"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .flat_map(|s| s["samples"].as_array().unwrap())
                    .map(|sample| sample["value"].as_f64().unwrap_or(0.0))
                    .sum()
            })
            .unwrap_or(0.0);
        assert_eq!(total, (traces * 3) as f64, "{tenant:?}: {range}");
        let instant = get_json(
            &server,
            &format!(
                "/api/metrics/query?q={}&{metrics_window}",
                q("{} | count_over_time() by (resource.service.name)")
            ),
            tenant,
        )
        .await;
        let mut labels: Vec<String> = instant["series"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|s| {
                        s["labels"][0]["value"]["stringValue"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        labels.sort();
        assert_eq!(labels, service_values, "{tenant:?}: {instant}");
    }
}

/// Vulture: `count_over_time` of a filter sums to the `matched` of the same TraceQL
/// search, for traces written in several parts that end up in the head, one block or
/// several blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_sum_equals_search_matched_across_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(&dir.path().join("server"))
        .env("SPOOR_HEAD__MAX_BLOCK_DURATION", "1s")
        .env("SPOOR_HEAD__TRACE_IDLE", "1s");
    server.start().await;

    // Trace n in three parts: its frontend, cart and db spans, written apart.
    let part = |index: usize| -> Vec<ResourceSpans> {
        (1..=8)
            .map(|n| {
                let mut batches = shop_trace(n);
                let mut batch = batches.swap_remove(index);
                for span in &mut batch.scope_spans[0].spans {
                    if n.is_multiple_of(2) || index == 2 {
                        span.attributes.push(kv("vulture.key", s("v-42")));
                    }
                }
                batch
            })
            .collect()
    };
    ingest(&server, "single-tenant", part(0)).await;
    wait_flushed(&server).await;
    ingest(&server, "single-tenant", part(1)).await;
    // Frontend spans in a block, cart spans in the head: 4 + 4.
    check_vulture(&server, 8).await;
    wait_flushed(&server).await;
    ingest(&server, "single-tenant", part(2)).await;
    // Two blocks and the head: 4 + 4 + 8.
    check_vulture(&server, 16).await;
    wait_flushed(&server).await;
    check_vulture(&server, 16).await;
    assert!(server.sigterm().success());
    server.start().await;
    check_vulture(&server, 16).await;
}

async fn check_vulture(server: &TestServer, expected: u64) {
    let search_path = format!(
        "/api/search?q={}&start={}&end={}",
        q("{ .vulture.key = \"v-42\" }"),
        BASE_SECONDS - 60,
        BASE_SECONDS + 3600
    );
    let metrics_path = format!(
        "/api/metrics/query_range?start={}&end={}&step=10s&q={}",
        BASE_SECONDS - 60,
        BASE_SECONDS + 3600,
        q("{ .vulture.key = \"v-42\" } | count_over_time()")
    );
    let search = get_json(server, &search_path, None).await;
    let matched: u64 = search["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["spanSets"].as_array().unwrap())
        .map(|s| s["matched"].as_u64().unwrap())
        .sum();
    let metrics = get_json(server, &metrics_path, None).await;
    let series = metrics["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{metrics}");
    let sum: f64 = series[0]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(matched, expected, "{search}");
    assert_eq!(sum, matched as f64, "{metrics}");
}
