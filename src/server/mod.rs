pub mod head;
pub mod ingest;
pub mod metrics;
pub mod wal;
