//! spoor: a Tempo-compatible trace store (spoor-server) and an OpenTelemetry-style
//! collector (spoor-collector), sharing one OTLP receiver.
//!
//! Server data path, in order:
//! `receiver` (OTLP gRPC/HTTP) → `server::ingest` (validate, tenant) → `server::wal`
//! (append + fsync, then ack) → `server::head` (live traces) → `server::block` (Parquet
//! block cut) → `server::storage` (object store) ← `server::query` ← `server::api` (Tempo HTTP API).

pub mod auth;
pub mod collector;
pub mod config;
pub mod error;
mod framing;
pub mod listener;
pub mod loadgen;
pub mod otlp;
pub mod receiver;
pub mod runtime;
pub mod server;
pub mod tenant;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod traceql;
