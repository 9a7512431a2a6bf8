//! Handshakes, client certificates and reloads against real rustls clients, with
//! certificates made by the openssl command-line tool.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::tls::{load_server_config, TlsFile};
use super::{Alpn, Conn, Incoming};
use crate::config::ServerTlsConfig;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`ca.pem`) and, signed by it, a leaf `<name>.pem`/`<name>.key` with the given
/// serial, valid for localhost / 127.0.0.1 and for both server and client use.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=spoor listener test CA",
            ],
        );
        std::fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        Pki { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn leaf(&self, name: &str, serial: u32) {
        let dir = self.dir.path();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        );
    }

    fn server_config(&self, name: &str, client_ca: bool) -> ServerTlsConfig {
        ServerTlsConfig {
            cert_file: self.path(&format!("{name}.pem")),
            key_file: self.path(&format!("{name}.key")),
            client_ca_file: client_ca.then(|| self.path("ca.pem")),
            reload_interval: Duration::from_millis(50),
        }
    }

    fn client(&self, identity: Option<&str>) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

async fn tls_listener(config: &ServerTlsConfig) -> Incoming {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Incoming::new(tcp, Some(config), Alpn::Http, "test").unwrap()
}

/// Echoes one message per connection, forever.
fn spawn_echo(mut incoming: Incoming) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (mut conn, _peer) = incoming.accept().await;
            assert!(matches!(conn, Conn::Tls(_)));
            tokio::spawn(async move {
                let mut buffer = [0_u8; 5];
                if conn.read_exact(&mut buffer).await.is_ok() {
                    let _ = conn.write_all(&buffer).await;
                    let _ = conn.flush().await;
                }
            });
        }
    })
}

/// Connects, round-trips a message and returns the DER of the server's certificate.
async fn exchange(
    connector: &tokio_rustls::TlsConnector,
    address: std::net::SocketAddr,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await?;
    stream.write_all(b"hello").await?;
    stream.flush().await?;
    let mut buffer = [0_u8; 5];
    stream.read_exact(&mut buffer).await?;
    assert_eq!(&buffer, b"hello");
    let (_, session) = stream.get_ref();
    Ok(session.peer_certificates().unwrap()[0].to_vec())
}

fn leaf_der(pki: &Pki, name: &str) -> Vec<u8> {
    CertificateDer::from_pem_file(pki.path(&format!("{name}.pem")))
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn serves_tls_and_requires_client_certificates_when_a_ca_is_set() {
    let pki = Pki::new();
    pki.leaf("server", 1);
    pki.leaf("client", 2);
    let incoming = tls_listener(&pki.server_config("server", true)).await;
    let address = incoming.local_addr();
    let echo = spawn_echo(incoming);

    let served = exchange(&pki.client(Some("client")), address)
        .await
        .unwrap();
    assert_eq!(served, leaf_der(&pki, "server"));
    let refused =
        tokio::time::timeout(Duration::from_secs(5), exchange(&pki.client(None), address))
            .await
            .expect("a refused client is answered, not left hanging");
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );
    // The listener still serves after a failed handshake.
    exchange(&pki.client(Some("client")), address)
        .await
        .unwrap();
    echo.abort();
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_others() {
    let pki = Pki::new();
    pki.leaf("server", 1);
    let incoming = tls_listener(&pki.server_config("server", false)).await;
    let address = incoming.local_addr();
    let echo = spawn_echo(incoming);
    // Connects and never starts the handshake.
    let _silent = TcpStream::connect(address).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), exchange(&pki.client(None), address))
        .await
        .expect("served while another handshake is pending")
        .unwrap();
    echo.abort();
}

#[tokio::test]
async fn reload_keeps_the_old_certificate_on_a_bad_file_and_takes_a_good_one() {
    let pki = Pki::new();
    pki.leaf("server", 1);
    pki.leaf("next", 2);
    let config = pki.server_config("server", false);
    let incoming = tls_listener(&config).await;
    let address = incoming.local_addr();
    let echo = spawn_echo(incoming);
    let client = pki.client(None);
    let original = leaf_der(&pki, "server");
    assert_eq!(exchange(&client, address).await.unwrap(), original);

    // A broken certificate file: the reload fails and the old certificate stays.
    std::fs::write(&config.cert_file, b"not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(exchange(&client, address).await.unwrap(), original);

    // A new certificate and key: picked up by the next poll.
    std::fs::copy(pki.path("next.key"), &config.key_file).unwrap();
    std::fs::copy(pki.path("next.pem"), &config.cert_file).unwrap();
    let replaced = leaf_der(&pki, "next");
    let mut served = Vec::new();
    for _ in 0..50 {
        served = exchange(&client, address).await.unwrap();
        if served == replaced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, replaced, "the new certificate was not loaded");
    echo.abort();
}

#[test]
fn unusable_files_name_the_file_at_fault() {
    let pki = Pki::new();
    pki.leaf("server", 1);
    pki.leaf("other", 2);
    let mut config = pki.server_config("server", false);
    config.key_file = pki.path("other.key");
    let error = load_server_config(&config, Alpn::Grpc).unwrap_err();
    assert_eq!(error.file, TlsFile::Key);
    assert!(
        error.to_string().contains("does not match the certificate"),
        "{error}"
    );

    let mut config = pki.server_config("server", true);
    config.client_ca_file = Some(pki.path("missing.pem"));
    let error = load_server_config(&config, Alpn::Grpc).unwrap_err();
    assert_eq!(error.key(), "client_ca_file");
    assert!(error.to_string().contains("missing.pem"), "{error}");

    let mut config = pki.server_config("server", false);
    config.cert_file = pki.path("server.key");
    let error = load_server_config(&config, Alpn::Grpc).unwrap_err();
    assert_eq!(error.key(), "cert_file");
}
