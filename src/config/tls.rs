//! TLS settings of a listening socket, shared by spoor-server (`api.tls`, `otlp.grpc.tls`,
//! `otlp.http.tls`) and spoor-collector (`receivers.*.tls`, `extensions.health_check.tls`,
//! `service.telemetry.metrics.tls`), and the check both loaders run on them.

use std::path::PathBuf;
use std::time::Duration;

use super::validate::Problems;

/// How often certificate files are checked for changes unless configured otherwise.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A listener's TLS: the server certificate and, for mutual TLS, the CA that client
/// certificates must chain to. The files are re-read on SIGHUP and when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// `cert_file`: PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// `key_file`: PEM private key (PKCS#8, PKCS#1 or SEC1) matching `cert_file`.
    pub key_file: PathBuf,
    /// `client_ca_file`: PEM CA certificates; when set, every client must present a
    /// certificate that chains to one of them (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// `reload_interval`: how often the files' modification times are checked.
    pub reload_interval: Duration,
}

/// Validates a `tls` section written as `cert_file`, `key_file`, `client_ca_file` (empty
/// when unset) and `reload_interval` under `key`: both files are required together, and
/// every file must exist and parse (with a matching key), so `--check-config` catches a
/// wrong path before a restart does. `None` when no file is set (plaintext), which is
/// an error when the section's presence asks for TLS (`present`, the collector's shape).
pub(crate) fn server_tls(
    problems: &mut Problems<'_>,
    key: &str,
    files: [&str; 3],
    reload_interval: Duration,
    present: bool,
) -> Option<ServerTlsConfig> {
    let [cert_file, key_file, client_ca_file] = files.map(str::trim);
    if cert_file.is_empty() && key_file.is_empty() && client_ca_file.is_empty() && !present {
        return None;
    }
    let mut complete = true;
    for (name, value) in [("cert_file", cert_file), ("key_file", key_file)] {
        if value.is_empty() {
            problems.invalid(
                &format!("{key}.{name}"),
                "is required when TLS is configured (cert_file and key_file are set together)",
            );
            complete = false;
        }
    }
    if reload_interval.is_zero() {
        problems.invalid(&format!("{key}.reload_interval"), "must be greater than 0");
    }
    if !complete {
        return None;
    }
    let config = ServerTlsConfig {
        cert_file: PathBuf::from(cert_file),
        key_file: PathBuf::from(key_file),
        client_ca_file: (!client_ca_file.is_empty()).then(|| PathBuf::from(client_ca_file)),
        reload_interval,
    };
    if let Err(error) =
        crate::listener::tls::load_server_config(&config, crate::listener::Alpn::Http)
    {
        problems.invalid(&format!("{key}.{}", error.key()), error.to_string());
    }
    Some(config)
}
