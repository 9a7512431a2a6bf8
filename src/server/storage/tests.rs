use bytes::Bytes;
use object_store::ObjectStoreExt;
use uuid::Uuid;

use super::paths::{BlockBloomPath, BlockDataPath, BlockMetaPath, BlockTagIndexPath};
use super::*;
use crate::config::{BackendConfig, StorageConfig};
use crate::server::block::{encode_block, BlockReader};
use crate::testing::make_traces_for_test;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn block_for(tenant: &TenantId, block_id: Uuid, seed: u64) -> EncodedBlock {
    encode_block(block_id, tenant, 0, &make_traces_for_test(seed, 20, 4)).unwrap()
}

#[tokio::test]
async fn put_list_delete() {
    let store = BlockStore::in_memory();
    let acme = tenant("acme");
    let globex = tenant("globex*(eu)");
    let first = block_for(&acme, Uuid::from_u128(1), 1);
    let second = block_for(&acme, Uuid::from_u128(2), 2);
    let other = block_for(&globex, Uuid::from_u128(3), 3);
    for block in [&second, &first, &other] {
        store.put_block(block).await.unwrap();
    }

    assert_eq!(
        store.list_tenants().await.unwrap(),
        vec![acme.clone(), globex.clone()]
    );
    let listed = store.list_blocks(&acme).await.unwrap();
    assert_eq!(listed, vec![first.meta.clone(), second.meta.clone()]);
    assert_eq!(
        store.list_blocks(&globex).await.unwrap(),
        vec![other.meta.clone()]
    );
    assert!(store
        .list_blocks(&tenant("nobody"))
        .await
        .unwrap()
        .is_empty());

    store
        .delete_block(&acme, first.meta.block_id)
        .await
        .unwrap();
    assert_eq!(
        store.list_blocks(&acme).await.unwrap(),
        vec![second.meta.clone()]
    );
    for path in [
        BlockDataPath::new(&acme, first.meta.block_id)
            .as_path()
            .clone(),
        BlockBloomPath::new(&acme, first.meta.block_id)
            .as_path()
            .clone(),
        BlockTagIndexPath::new(&acme, first.meta.block_id)
            .as_path()
            .clone(),
    ] {
        assert!(matches!(
            store.get(&path).await,
            Err(StorageError::NotFound { .. })
        ));
    }
    // Deleting again (an interrupted delete being retried) is fine.
    store
        .delete_block(&acme, first.meta.block_id)
        .await
        .unwrap();
}

#[tokio::test]
async fn incomplete_and_unreadable_blocks_are_skipped() {
    let store = BlockStore::in_memory();
    let acme = tenant("acme");
    let complete = block_for(&acme, Uuid::from_u128(1), 1);
    store.put_block(&complete).await.unwrap();

    // Upload interrupted before meta.json: data and bloom only.
    let partial = block_for(&acme, Uuid::from_u128(2), 2);
    let id = partial.meta.block_id;
    let objects = store.object_store();
    objects
        .put(
            BlockDataPath::new(&acme, id).as_path(),
            partial.data.clone().into(),
        )
        .await
        .unwrap();
    objects
        .put(
            BlockBloomPath::new(&acme, id).as_path(),
            partial.bloom.clone().into(),
        )
        .await
        .unwrap();

    // A meta from an unknown future version.
    let future = block_for(&acme, Uuid::from_u128(3), 3);
    store.put_block(&future).await.unwrap();
    let future_meta = BlockMetaPath::new(&acme, future.meta.block_id);
    objects
        .put(
            future_meta.as_path(),
            Bytes::from_static(br#"{"version":"v9"}"#).into(),
        )
        .await
        .unwrap();

    // A meta copied into the wrong block folder.
    let misplaced = BlockMetaPath::new(&acme, Uuid::from_u128(4));
    objects
        .put(misplaced.as_path(), complete.meta.to_json().unwrap().into())
        .await
        .unwrap();

    // Stray objects that are not blocks.
    objects
        .put(
            &Path::from("acme/not-a-block/meta.json"),
            Bytes::new().into(),
        )
        .await
        .unwrap();

    assert_eq!(store.list_blocks(&acme).await.unwrap(), vec![complete.meta]);
}

#[tokio::test]
async fn local_filesystem_backend_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        backend: BackendConfig::Local {
            path: dir.path().join("blocks"),
        },
        blocklist_poll: std::time::Duration::from_secs(30),
    };
    let store = BlockStore::from_config(&config).unwrap();
    let acme = tenant("acme");
    assert!(store.list_tenants().await.unwrap().is_empty());
    assert!(store.list_blocks(&acme).await.unwrap().is_empty());
    let traces = make_traces_for_test(9, 30, 6);
    let block = encode_block(Uuid::from_u128(5), &acme, 0, &traces).unwrap();
    store.put_block(&block).await.unwrap();

    let block_dir = dir
        .path()
        .join("blocks/acme/00000000-0000-0000-0000-000000000005");
    for file in ["meta.json", "data.parquet", "bloom"] {
        assert!(block_dir.join(file).is_file(), "{file} missing");
    }

    // A second store over the same directory sees the block (a restart).
    let reopened = BlockStore::from_config(&config).unwrap();
    let metas = reopened.list_blocks(&acme).await.unwrap();
    assert_eq!(metas, vec![block.meta.clone()]);
    let reader = BlockReader::new(reopened.clone(), metas[0].clone());
    for trace in &traces {
        assert_eq!(
            reader.find_trace(trace.trace_id).await.unwrap().as_ref(),
            Some(&trace.batches)
        );
    }
    assert_eq!(reader.read_all().await.unwrap(), traces);

    reopened
        .delete_block(&acme, block.meta.block_id)
        .await
        .unwrap();
    assert!(reopened.list_blocks(&acme).await.unwrap().is_empty());
    assert!(!block_dir.exists(), "empty block directory left behind");
}

#[test]
fn s3_backend_builds_with_prefix_and_path_style() {
    let config = StorageConfig {
        backend: BackendConfig::S3(S3Config {
            bucket: "traces".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            prefix: "/spoor/prod/".into(),
            force_path_style: true,
            allow_http: true,
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
        }),
        blocklist_poll: std::time::Duration::from_secs(30),
    };
    let store = BlockStore::from_config(&config).unwrap();
    let description = store.object_store().to_string();
    assert!(description.contains("spoor/prod"), "{description}");
}

#[test]
fn storage_errors_map_to_codes() {
    let missing = StorageError::NotFound { path: "x".into() };
    assert_eq!(missing.error_code(), ErrorCode::Unavailable);
    let meta = StorageError::Meta(MetaError::UnsupportedFormat("x".into()));
    assert_eq!(meta.error_code(), ErrorCode::Internal);
}
