//! Configuration: raw (as written in YAML / env / flags) → validated typed config.
//! Loading, layering and validation live here; components receive only validated types.
//!
//! - `raw`: the YAML shape with serde defaults, the single source of built-in defaults.
//! - `load`: figment layering (defaults → file → `SPOOR_` env → flags), unknown keys and
//!   type errors, all collected ([`load_server_config`]).
//! - `validate`: ranges, addresses and cross-field rules, producing [`ServerConfig`].
//!
//! Every key is documented in docs/configuration.md.

#![deny(missing_docs)]

pub mod collector;
mod error;
mod load;
mod raw;
pub mod server;
mod tls;
mod validate;
mod values;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, ConfigErrors, ValueOrigin};
pub use load::{load_server_config, ServerCliOverrides, ENV_PREFIX, ENV_SEPARATOR};
pub use server::*;
pub use tls::{ServerTlsConfig, DEFAULT_TLS_RELOAD_INTERVAL};
