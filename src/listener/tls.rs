//! rustls server configurations built from PEM files, and their reload on SIGHUP or when
//! the files change.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tracing::{error, info, warn};

use super::Alpn;
use crate::config::ServerTlsConfig;

/// The configuration new handshakes use; replaced whole by a successful reload.
pub(crate) type SharedServerConfig = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Which configured file a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `cert_file`.
    Cert,
    /// `key_file`.
    Key,
    /// `client_ca_file`.
    ClientCa,
}

impl TlsFile {
    /// The config key naming the file.
    pub fn key(self) -> &'static str {
        match self {
            TlsFile::Cert => "cert_file",
            TlsFile::Key => "key_file",
            TlsFile::ClientCa => "client_ca_file",
        }
    }
}

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsError {
    /// Which file.
    pub file: TlsFile,
    /// The path as configured.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl TlsError {
    fn new(file: TlsFile, path: &Path, problem: impl fmt::Display) -> TlsError {
        TlsError {
            file,
            path: path.to_owned(),
            problem: problem.to_string(),
        }
    }

    /// The config key of the file at fault (`cert_file`, `key_file`, `client_ca_file`).
    pub fn key(&self) -> &'static str {
        self.file.key()
    }
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::new(file, path, error))
}

fn read_certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::new(file, path, format!("invalid PEM: {error}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            file,
            path,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        TlsError::new(
            TlsFile::Key,
            path,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"),
        )
    })
}

/// Reads the files of `config` and builds the rustls configuration: the certificate
/// chain with its key (which must match), client certificates required and verified
/// against `client_ca_file` when set, and the ALPN protocols of `alpn`.
///
/// # Errors
/// The first file that cannot be read or used, with what is wrong with it.
pub fn load_server_config(
    config: &ServerTlsConfig,
    alpn: Alpn,
) -> Result<rustls::ServerConfig, TlsError> {
    // Explicitly the provider already in the tree (tonic, reqwest), so the process never
    // depends on which default provider happens to be installed.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(TlsFile::Cert, &config.cert_file)?;
    let key = read_key(&config.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::new(TlsFile::Cert, &config.cert_file, error))?;
    let builder = match &config.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(TlsFile::ClientCa, path)? {
                roots
                    .add(cert)
                    .map_err(|error| TlsError::new(TlsFile::ClientCa, path, error))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::new(TlsFile::ClientCa, path, error))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => TlsError::new(
                TlsFile::Key,
                &config.key_file,
                format!(
                    "does not match the certificate in {}",
                    config.cert_file.display()
                ),
            ),
            other => TlsError::new(TlsFile::Cert, &config.cert_file, other),
        })?;
    server.alpn_protocols = alpn.protocols();
    Ok(server)
}

/// What identifies a version of the files: a replaced file (written in place, renamed
/// over, or a symlink swapped as Kubernetes does with secrets) changes one of these.
pub(crate) type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

pub(crate) fn fingerprint(config: &ServerTlsConfig) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    [
        Some(&config.cert_file),
        Some(&config.key_file),
        config.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len(), metadata.ino()))
    })
    .collect()
}

/// Keeps `current` up to date with the files: reloads on SIGHUP and when a poll every
/// `reload_interval` sees them change. A reload that fails keeps the previous
/// configuration and logs the file at fault, once per change of the files.
pub(crate) async fn reload_loop(
    listener: Arc<str>,
    config: ServerTlsConfig,
    alpn: Alpn,
    current: SharedServerConfig,
    mut seen: Fingerprint,
) {
    let mut hangup = match crate::runtime::signals::reload_requests() {
        Ok(signal) => Some(signal),
        Err(error) => {
            warn!(listener = %listener, %error, "cannot watch SIGHUP; certificates reload only when their files change");
            None
        }
    };
    loop {
        let requested = tokio::select! {
            _ = tokio::time::sleep(config.reload_interval) => false,
            Some(()) = async {
                match &mut hangup {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        // A few stat calls: cheaper than a hop to the blocking pool.
        let now = fingerprint(&config);
        if !requested && now == seen {
            continue;
        }
        seen = now;
        let loading = config.clone();
        match tokio::task::spawn_blocking(move || load_server_config(&loading, alpn)).await {
            Ok(Ok(server)) => {
                *current.write() = Arc::new(server);
                info!(
                    listener = %listener,
                    cert_file = %config.cert_file.display(),
                    trigger = if requested { "SIGHUP" } else { "file change" },
                    "tls certificates reloaded"
                );
            }
            Ok(Err(reload_error)) => error!(
                listener = %listener,
                key = reload_error.key(),
                file = %reload_error.path.display(),
                error = %reload_error,
                "tls reload failed; new connections keep the previous certificates"
            ),
            Err(join_error) => error!(
                listener = %listener,
                error = %join_error,
                "tls reload failed; new connections keep the previous certificates"
            ),
        }
    }
}
