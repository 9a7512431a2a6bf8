//! Round trips through the whole block path: encode → store → read.

use bytes::Bytes;
use object_store::ObjectStoreExt;
use proptest::prelude::*;
use prost::Message;
use uuid::Uuid;

use super::*;
use crate::otlp::{OtlpResourceSpans, OtlpTracesData};
use crate::server::storage::paths::{BlockBloomPath, BlockDataPath};
use crate::server::storage::BlockStore;
use crate::tenant::TenantId;
use crate::testing::{arb_sorted_traces, make_trace_for_test, make_traces_for_test, TestRng};

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

/// Byte-exact comparison: prost encoding is deterministic, and unlike `==` it treats
/// equal NaN bit patterns as equal.
fn wire(batches: &[OtlpResourceSpans]) -> Vec<u8> {
    OtlpTracesData {
        resource_spans: batches.to_vec(),
    }
    .encode_to_vec()
}

async fn store_block(store: &BlockStore, traces: &[TracePieces]) -> BlockReader {
    let block = encode_block(Uuid::new_v4(), &tenant(), 0, traces).unwrap();
    store.put_block(&block).await.unwrap();
    BlockReader::new(store.clone(), block.meta)
}

/// Every trace through [`BlockReader::trace_stream`], iterated on a blocking thread as
/// the compactor does.
async fn stream_all(reader: &BlockReader) -> Vec<TracePieces> {
    let stream = reader
        .trace_stream(tokio::runtime::Handle::current())
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || stream.collect::<Result<Vec<_>, _>>())
        .await
        .unwrap()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_field_round_trips(traces in arb_sorted_traces(4)) {
        runtime().block_on(async {
            let store = BlockStore::in_memory();
            let reader = store_block(&store, &traces).await;

            for trace in &traces {
                let found = reader.find_trace(trace.trace_id).await.unwrap();
                let found = found.expect("trace stored in the block is found");
                prop_assert_eq!(wire(&found), wire(&trace.batches));
            }

            let all = reader.read_all().await.unwrap();
            prop_assert_eq!(all.len(), traces.len());
            for (read, written) in all.iter().zip(&traces) {
                prop_assert_eq!(read.trace_id, written.trace_id);
                prop_assert_eq!(wire(&read.batches), wire(&written.batches));
            }
            let streamed = stream_all(&reader).await;
            prop_assert_eq!(streamed.len(), traces.len());
            for (read, written) in streamed.iter().zip(&traces) {
                prop_assert_eq!(read.trace_id, written.trace_id);
                prop_assert_eq!(wire(&read.batches), wire(&written.batches));
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn trace_stream_reassembles_traces_across_row_groups() {
    // 7-span traces: the first row group ends in the middle of a trace.
    let traces = make_traces_for_test(3, writer::ROWS_PER_ROW_GROUP / 7 + 20, 7);
    assert_ne!(writer::ROWS_PER_ROW_GROUP % 7, 0);
    let store = BlockStore::in_memory();
    let reader = store_block(&store, &traces).await;
    assert_eq!(reader.row_groups().await.unwrap().len(), 2);
    let streamed = stream_all(&reader).await;
    assert_eq!(streamed.len(), traces.len());
    for (read, written) in streamed.iter().zip(&traces) {
        assert_eq!(read.trace_id, written.trace_id);
        assert_eq!(wire(&read.batches), wire(&written.batches));
    }
}

#[tokio::test]
async fn meta_describes_the_block() {
    let traces = make_traces_for_test(1, 50, 10);
    let block = encode_block(Uuid::from_u128(9), &tenant(), 3, &traces).unwrap();
    let meta = &block.meta;
    assert_eq!(meta.block_id, Uuid::from_u128(9));
    assert_eq!(meta.compaction_level, 3);
    assert_eq!(meta.total_traces, traces.len() as u64);
    assert_eq!(meta.total_spans, traces.len() as u64 * 10);
    assert_eq!(meta.min_trace_id, traces[0].trace_id);
    assert_eq!(meta.max_trace_id, traces[traces.len() - 1].trace_id);
    assert_eq!(meta.data_size_bytes, block.data.len() as u64);
    assert_eq!(meta.bloom_size_bytes, block.bloom.len() as u64);
    let spans = traces
        .iter()
        .flat_map(|t| &t.batches)
        .flat_map(|b| &b.scope_spans)
        .flat_map(|s| &s.spans);
    let min_start = spans.clone().map(|s| s.start_time_unix_nano).min().unwrap();
    let max_start = spans.clone().map(|s| s.start_time_unix_nano).max().unwrap();
    let max_end = spans.map(|s| s.end_time_unix_nano).max().unwrap();
    assert_eq!(meta.min_start_time_unix_nano, min_start);
    assert_eq!(meta.max_start_time_unix_nano, max_start);
    assert_eq!(meta.max_end_time_unix_nano, max_end);
}

#[tokio::test]
async fn lookups_in_a_multi_row_group_block() {
    // 9000 traces × 10 spans: two row groups, many pages each.
    let traces = make_traces_for_test(2, 9_000, 10);
    let store = BlockStore::in_memory();
    let reader = store_block(&store, &traces).await;
    for trace in traces.iter().step_by(997).chain(traces.last()) {
        let found = reader.find_trace(trace.trace_id).await.unwrap().unwrap();
        assert_eq!(found, trace.batches);
    }
    // With bloom and footer cached, one lookup fetches roughly one page per column.
    let before = reader.bytes_read();
    let probe = &traces[4_321];
    assert!(reader.find_trace(probe.trace_id).await.unwrap().is_some());
    let lookup_bytes = reader.bytes_read() - before;
    let data_bytes = reader.meta().data_size_bytes;
    println!("trace lookup read {lookup_bytes} of {data_bytes} bytes");
    assert!(
        lookup_bytes * 5 < data_bytes,
        "lookup read {lookup_bytes} of {data_bytes} bytes"
    );

    let all = reader.read_all().await.unwrap();
    assert_eq!(all, traces);
}

#[tokio::test]
async fn absent_trace_is_none_and_the_bloom_short_circuits() {
    let traces = make_traces_for_test(3, 200, 5);
    let store = BlockStore::in_memory();
    let reader = store_block(&store, &traces).await;
    let meta = reader.meta().clone();

    // Outside the trace-ID range: answered from the meta alone.
    assert_eq!(reader.find_trace(TraceId([0; 16])).await.unwrap(), None);

    // Inside the range but absent: with the data file gone, only a bloom miss can
    // still answer without an error.
    let data_path = BlockDataPath::new(&meta.tenant, meta.block_id);
    store
        .object_store()
        .delete(data_path.as_path())
        .await
        .unwrap();
    let mut rng = TestRng::new(11);
    let mut bloom_misses = 0;
    for _ in 0..50 {
        let mut candidate = meta.min_trace_id;
        candidate.0[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        if !meta.may_contain_trace_id(&candidate) || traces.iter().any(|t| t.trace_id == candidate)
        {
            continue;
        }
        if let Ok(None) = reader.find_trace(candidate).await {
            bloom_misses += 1;
        }
    }
    assert!(
        bloom_misses >= 40,
        "only {bloom_misses} lookups short-circuited"
    );

    // A present trace now needs the data file, so it fails (with an error, not a panic).
    assert!(reader.find_trace(traces[0].trace_id).await.is_err());
}

#[tokio::test]
async fn absent_trace_that_passes_the_bloom_is_none() {
    // A reader whose bloom says "maybe" for everything exercises the Parquet path.
    let traces = make_traces_for_test(4, 300, 3);
    let store = BlockStore::in_memory();
    let reader = store_block(&store, &traces).await;
    let meta = reader.meta().clone();
    let mut everything = TraceIdBloom::with_capacity(1, 0.5);
    for byte in 0..=255u8 {
        everything.insert(&TraceId([byte; 16]));
    }
    // Cheap trick: overwrite the bloom with one that is all ones.
    let all_ones = {
        let encoded = everything.encode();
        let mut bytes = encoded.to_vec();
        let body_end = bytes.len() - 4;
        bytes[14..body_end].iter_mut().for_each(|b| *b = 0xff);
        let crc = crc32fast::hash(&bytes[..body_end]);
        bytes[body_end..].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(bytes)
    };
    let bloom_path = BlockBloomPath::new(&meta.tenant, meta.block_id);
    store
        .object_store()
        .put(bloom_path.as_path(), all_ones.into())
        .await
        .unwrap();
    let reader = BlockReader::new(store.clone(), meta);
    let mut between = traces[100].trace_id;
    between.0[15] = between.0[15].wrapping_add(1);
    assert!(traces.iter().all(|t| t.trace_id != between));
    assert_eq!(reader.find_trace(between).await.unwrap(), None);
    assert_eq!(
        reader
            .find_trace(traces[100].trace_id)
            .await
            .unwrap()
            .unwrap(),
        traces[100].batches
    );
}

#[tokio::test]
async fn corrupt_files_are_errors_not_panics() {
    let traces = make_traces_for_test(5, 100, 5);
    let store = BlockStore::in_memory();
    let reader = store_block(&store, &traces).await;
    let meta = reader.meta().clone();
    let data_path = BlockDataPath::new(&meta.tenant, meta.block_id);
    let original = store.get(data_path.as_path()).await.unwrap();

    // Not a Parquet file at all, or cut short: always an error.
    let hopeless: [&[u8]; 4] = [
        b"",
        b"PAR1garbagePAR1",
        &original[..original.len() / 2],
        &original[..original.len() - 1],
    ];
    for damaged in hopeless {
        store
            .object_store()
            .put(data_path.as_path(), Bytes::copy_from_slice(damaged).into())
            .await
            .unwrap();
        let fresh = BlockReader::new(store.clone(), meta.clone());
        assert!(fresh.find_trace(traces[7].trace_id).await.is_err());
        assert!(fresh.read_all().await.is_err());
    }

    // Flipped bytes spread over pages, dictionaries and footer: an error, or (Parquet
    // pages carry no checksum) different values; never a panic.
    for position in (0..original.len()).step_by(original.len() / 48 + 1) {
        let mut damaged = original.to_vec();
        damaged[position] ^= 0x5a;
        store
            .object_store()
            .put(data_path.as_path(), Bytes::from(damaged).into())
            .await
            .unwrap();
        let fresh = BlockReader::new(store.clone(), meta.clone());
        let _ = fresh.find_trace(traces[7].trace_id).await;
        let _ = fresh.read_all().await;
    }

    // A corrupt bloom filter is an error too.
    let bloom_path = BlockBloomPath::new(&meta.tenant, meta.block_id);
    store
        .object_store()
        .put(bloom_path.as_path(), Bytes::from_static(b"nope").into())
        .await
        .unwrap();
    let fresh = BlockReader::new(store.clone(), meta);
    assert!(matches!(
        fresh.find_trace(traces[7].trace_id).await,
        Err(BlockError::Bloom(_))
    ));
}

#[test]
fn encode_rejects_bad_input() {
    let mut traces = make_traces_for_test(6, 3, 2);
    assert!(matches!(
        encode_block(Uuid::nil(), &tenant(), 0, &[]),
        Err(BlockError::EmptyBlock)
    ));
    traces.swap(0, 1);
    assert!(matches!(
        encode_block(Uuid::nil(), &tenant(), 0, &traces),
        Err(BlockError::UnsortedTraces { .. })
    ));
    let duplicate = vec![traces[0].clone(), traces[0].clone()];
    assert!(matches!(
        encode_block(Uuid::nil(), &tenant(), 0, &duplicate),
        Err(BlockError::UnsortedTraces { .. })
    ));
    let mut foreign = make_trace_for_test(7, 3);
    foreign.batches[0].scope_spans[0].spans[0].trace_id = vec![1; 16];
    assert!(matches!(
        encode_block(Uuid::nil(), &tenant(), 0, &[foreign]),
        Err(BlockError::SpanTraceIdMismatch { .. })
    ));
}

#[test]
fn empty_groups_are_not_stored() {
    let mut trace = make_trace_for_test(8, 4);
    let expected = trace.batches.clone();
    trace.batches.insert(0, OtlpResourceSpans::default());
    trace.batches[1].scope_spans.push(Default::default());
    let block = encode_block(Uuid::nil(), &tenant(), 0, &[trace]).unwrap();
    let all = runtime().block_on(async {
        let store = BlockStore::in_memory();
        store.put_block(&block).await.unwrap();
        BlockReader::new(store, block.meta.clone())
            .read_all()
            .await
            .unwrap()
    });
    assert_eq!(all[0].batches, expected);
}

/// Not a timing test: prints the size the realistic fixture costs, and fails only when
/// it is far beyond the target, which would mean an encoding setting got lost.
#[test]
fn bytes_per_span_for_realistic_traces() {
    let traces = make_traces_for_test(42, 10_000, 10);
    let num_spans = 100_000f64;
    let block = encode_block(Uuid::nil(), &tenant(), 0, &traces).unwrap();
    let data_per_span = block.data.len() as f64 / num_spans;
    let total_per_span = (block.data.len() + block.bloom.len()) as f64 / num_spans;
    let otlp_per_span =
        traces.iter().map(|t| wire(&t.batches).len()).sum::<usize>() as f64 / num_spans;
    println!(
        "block size: {data_per_span:.1} data bytes/span, {total_per_span:.1} bytes/span with bloom \
         (OTLP protobuf: {otlp_per_span:.1} bytes/span)"
    );
    print_column_sizes(&block.data, num_spans);
    assert!(total_per_span < 140.0, "{total_per_span} bytes/span");
}

/// Per-column share of the file, to see where the bytes go when tuning encodings.
fn print_column_sizes(data: &Bytes, num_spans: f64) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(data.clone()).unwrap();
    let metadata = reader.metadata();
    let schema = crate::server::block::schema::block_schema();
    for (leaf, field) in schema.fields().iter().enumerate() {
        let (mut total, mut dictionary) = (0i64, 0i64);
        for row_group in metadata.row_groups() {
            let chunk = row_group.column(leaf);
            total += chunk.compressed_size();
            dictionary += chunk
                .dictionary_page_offset()
                .map_or(0, |offset| chunk.data_page_offset() - offset);
        }
        let encodings: Vec<_> = metadata.row_group(0).column(leaf).encodings().collect();
        println!(
            "  {:26} {:6.2} bytes/span (dictionary pages {} bytes) {:?}",
            field.name(),
            total as f64 / num_spans,
            dictionary,
            encodings
        );
    }
}
