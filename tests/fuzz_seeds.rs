//! The fuzz targets' seed inputs (fuzz/seeds/<target>/) and the regression inputs of
//! their findings. Seeds are real inputs built by spoor's own encoders, so the fuzzer
//! starts from the deep paths instead of guessing the formats; this test keeps the
//! checked-in files equal to what the encoders produce today and checks each one is
//! accepted. `SPOOR_WRITE_FUZZ_SEEDS=1 cargo test --features test-util --test fuzz_seeds`
//! rewrites them. See docs/fuzzing.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use spoor::config::collector::{load_collector_config_from_str, DEFAULT_CONFIG_YAML};
use spoor::otlp::{OtlpExportRequest, TraceId};
use spoor::receiver::jaeger::thrift::encode::{encode_batch, encode_emit_batch};
use spoor::receiver::jaeger::thrift::{decode_agent_message, decode_batch};
use spoor::receiver::jaeger::{
    batches_to_otlp, Batch, Process, Span, Tag, TagValue, ThriftProtocol,
};
use spoor::receiver::json::decode_export_request;
use spoor::receiver::zipkin::{decode_spans, ZipkinOptions};
use spoor::server::block::{BlockFormat, BlockMeta};
use spoor::server::wal::{read_segment, WalDir, WalRecord};
use spoor::tenant::TenantId;
use spoor::testing::make_trace_for_test;

const ZIPKIN_BODY: &str = r#"[
  {"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "name": "get /api",
   "kind": "CLIENT", "timestamp": 1700000000000123, "duration": 2500,
   "localEndpoint": {"serviceName": "frontend", "ipv4": "192.168.1.10", "port": 8080},
   "remoteEndpoint": {"serviceName": "backend", "ipv6": "::1", "port": 9000},
   "annotations": [{"timestamp": 1700000000000200, "value": "ws"}],
   "tags": {"http.method": "GET", "error": "true", "http.status_code": "200"}},
  {"traceId": "5af7183fb1d4cf5f", "id": "7c332e6cdaf75a7d", "parentId": "6b221d5bc9e6496c",
   "name": "get /api", "kind": "SERVER", "timestamp": 1700000000000500, "duration": 1800,
   "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.1.20", "port": 9000},
   "tags": {"otel.scope.name": "lib", "otel.scope.version": "1.0"}}
]"#;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

fn otlp_request(seed: u64, spans: usize) -> OtlpExportRequest {
    OtlpExportRequest {
        resource_spans: make_trace_for_test(seed, spans).batches,
    }
}

fn jaeger_batch() -> Batch {
    let tag = |key: &str, value: TagValue| Tag {
        key: key.to_owned(),
        value,
    };
    Batch {
        process: Some(Process {
            service_name: "frontend".to_owned(),
            tags: vec![tag("hostname", TagValue::Str("web-1".to_owned()))],
        }),
        spans: vec![
            Span {
                trace_id_high: 0x5af7_183f,
                trace_id_low: 0xb1d4_cf5f_6b22_1d5b,
                span_id: 0x6b22_1d5b_c9e6_496c,
                operation_name: "get /api".to_owned(),
                start_unix_nano: 1_700_000_000_000_123_000,
                end_unix_nano: 1_700_000_000_002_623_000,
                tags: vec![
                    tag("span.kind", TagValue::Str("client".to_owned())),
                    tag("error", TagValue::Bool(true)),
                    tag("http.status_code", TagValue::Long(500)),
                    tag("ratio", TagValue::Double(0.5)),
                    tag("blob", TagValue::Binary(vec![1, 2, 3])),
                ],
                ..Span::default()
            },
            Span {
                trace_id_high: 0x5af7_183f,
                trace_id_low: 0xb1d4_cf5f_6b22_1d5b,
                span_id: 0x7c33_2e6c_daf7_5a7d,
                parent_span_id: 0x6b22_1d5b_c9e6_496c,
                operation_name: "db query".to_owned(),
                start_unix_nano: 1_700_000_000_000_500_000,
                end_unix_nano: 1_700_000_000_001_000_000,
                ..Span::default()
            },
        ],
    }
}

fn wal_segment() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let wal = WalDir::open(dir.path()).unwrap();
    let mut segment = wal.create_segment(1).unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let trace = make_trace_for_test(7, 3);
    let (framed, _) = spoor::server::wal::batch_record(&tenant, &trace.batches);
    segment.append(&framed).unwrap();
    let carry = WalRecord::Carry {
        through_segment: 0,
        tenant,
        pieces: vec![(trace.trace_id, bytes::Bytes::from_static(b"piece"))],
    };
    segment.append(&spoor::server::wal::frame(&carry)).unwrap();
    segment
        .append(&spoor::server::wal::frame(&WalRecord::Cut {
            through_segment: 0,
        }))
        .unwrap();
    segment.sync().unwrap();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .expect("the segment file");
    std::fs::read(file).unwrap()
}

fn block_meta(replaces: Vec<uuid::Uuid>) -> Vec<u8> {
    BlockMeta {
        block_id: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        tenant: TenantId::new("acme").unwrap(),
        format: BlockFormat::SpoorParquet1,
        min_start_time_unix_nano: 1_700_000_000_000_000_000,
        max_start_time_unix_nano: 1_700_000_060_000_000_000,
        max_end_time_unix_nano: 1_700_000_061_000_000_000,
        min_trace_id: TraceId([0x01; 16]),
        max_trace_id: TraceId([0xfe; 16]),
        total_traces: 2,
        total_spans: 20,
        data_size_bytes: 1234,
        bloom_size_bytes: 56,
        compaction_level: u32::from(!replaces.is_empty()),
        created_at: 1_700_000_100,
        tag_index_size_bytes: Some(789),
        replaces,
    }
    .to_json()
    .unwrap()
}

/// Every seed: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = Vec::new();
    for (seed, spans) in [(1, 1), (2, 5), (3, 20)] {
        let request = otlp_request(seed, spans);
        seeds.push((
            "otlp_proto",
            format!("trace-{spans}-spans.pb"),
            request.encode_to_vec(),
        ));
        seeds.push((
            "otlp_json",
            format!("trace-{spans}-spans.json"),
            serde_json::to_vec(&request).unwrap(),
        ));
    }
    // One span the ingest path must reject (a short trace ID) next to a good one.
    let mut mixed = otlp_request(4, 2);
    mixed.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    seeds.push((
        "otlp_proto",
        "one-bad-span.pb".into(),
        mixed.encode_to_vec(),
    ));
    seeds.push(("wal_record", "segment.wal".into(), wal_segment()));
    seeds.push(("block_meta", "v1.json".into(), block_meta(Vec::new())));
    seeds.push((
        "block_meta",
        "v2.json".into(),
        block_meta(vec![uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2)]),
    ));
    for (name, path) in [
        ("examples.yaml", "examples/collector.yaml"),
        ("packaging.yaml", "packaging/collector.yaml"),
    ] {
        seeds.push((
            "collector_config",
            name.into(),
            std::fs::read(root.join(path)).unwrap(),
        ));
    }
    seeds.push((
        "collector_config",
        "default.yaml".into(),
        DEFAULT_CONFIG_YAML.as_bytes().to_vec(),
    ));
    // The first byte selects the decoder, as in fuzz_targets/jaeger_thrift.rs.
    let batch = jaeger_batch();
    for (selector, name, protocol, agent) in [
        (0u8, "binary-batch", ThriftProtocol::Binary, false),
        (1, "compact-batch", ThriftProtocol::Compact, false),
        (2, "binary-emit-batch", ThriftProtocol::Binary, true),
        (3, "compact-emit-batch", ThriftProtocol::Compact, true),
    ] {
        let mut bytes = vec![selector];
        bytes.extend(if agent {
            encode_emit_batch(&batch, protocol)
        } else {
            encode_batch(&batch, protocol)
        });
        seeds.push(("jaeger_thrift", format!("{name}.bin"), bytes));
    }
    seeds.push(("zipkin_json", "two-spans.json".into(), ZIPKIN_BODY.into()));
    seeds
}

#[test]
fn checked_in_seeds_are_what_the_encoders_produce() {
    let write = std::env::var_os("SPOOR_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = seeds_dir().join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (SPOOR_WRITE_FUZZ_SEEDS=1)", path.display()));
            assert!(
                on_disk == bytes,
                "{} is stale; rewrite with SPOOR_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}

#[test]
fn every_seed_is_accepted_by_its_decoder() {
    let env = BTreeMap::new();
    for (target, name, bytes) in seeds() {
        let context = format!("{target}/{name}");
        match target {
            "otlp_proto" => {
                OtlpExportRequest::decode(&bytes[..]).expect(&context);
            }
            "otlp_json" => {
                decode_export_request(&bytes).expect(&context);
            }
            "wal_record" => {
                let contents = read_segment(&bytes).expect(&context);
                assert!(
                    contents.damage.is_empty(),
                    "{context}: {:?}",
                    contents.damage
                );
                assert_eq!(contents.records.len(), 3, "{context}");
                for record in contents.records {
                    WalRecord::decode(record).expect(&context);
                }
            }
            "block_meta" => {
                BlockMeta::from_json(&bytes).expect(&context);
            }
            "collector_config" => {
                let text = std::str::from_utf8(&bytes).unwrap();
                load_collector_config_from_str(text, None, &env).expect(&context);
            }
            "jaeger_thrift" => {
                let protocol = if bytes[0] & 1 == 0 {
                    ThriftProtocol::Binary
                } else {
                    ThriftProtocol::Compact
                };
                let batch = if bytes[0] & 2 == 0 {
                    decode_batch(&bytes[1..], protocol)
                } else {
                    decode_agent_message(&bytes[1..], protocol)
                }
                .expect(&context);
                batches_to_otlp(vec![batch]).expect(&context);
            }
            "zipkin_json" => {
                decode_spans(&bytes, ZipkinOptions::default()).expect(&context);
            }
            other => panic!("no decoder for target {other}"),
        }
    }
}

#[test]
fn the_collector_config_loader_reads_text_as_the_file_loader_reads_the_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("examples/collector.yaml");
    let env = BTreeMap::new();
    let from_file = spoor::config::collector::load_collector_config_with_env(Some(&path), &env);
    let text = std::fs::read_to_string(&path).unwrap();
    let from_text = load_collector_config_from_str(&text, Some(&path), &env);
    assert_eq!(format!("{from_file:?}"), format!("{from_text:?}"));
    let errors = load_collector_config_from_str("receivers: [", None, &env).unwrap_err();
    assert!(errors.to_string().contains("invalid YAML"), "{errors}");
}
