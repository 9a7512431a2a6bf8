//! Configuration: raw (as written in YAML / env / flags) → validated typed config.
//! Loading, layering and validation live here; components receive only validated types.

pub mod server;

pub use server::*;
