//! `tls.insecure_skip_verify` for the `otlp` (gRPC) exporter: tonic's TLS always verifies
//! the server, so the channel gets a connector of its own that does TLS with rustls and
//! accepts any server certificate. Handshake signatures are still checked (the server
//! must hold the key of the certificate it shows); only the chain and name are not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::collector::ClientTlsConfig;

/// Accepts every server certificate; verifies handshake signatures.
#[derive(Debug)]
struct AcceptAnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A tower connector for tonic: TCP, then TLS without verifying the server.
#[derive(Clone)]
pub(crate) struct SkipVerifyConnector {
    tls: tokio_rustls::TlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for SkipVerifyConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkipVerifyConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl SkipVerifyConnector {
    /// The connector for `tls` (its client certificate, if any, is presented; `ca_file` is
    /// irrelevant since nothing is verified).
    pub(crate) fn new(tls: &ClientTlsConfig) -> Result<SkipVerifyConnector, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls: {error}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate(provider)));
        let mut config = match (&tls.cert_file, &tls.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let chain = CertificateDer::pem_file_iter(cert_file)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|error| format!("tls.cert_file {}: {error}", cert_file.display()))?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|error| format!("tls.key_file {}: {error}", key_file.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| format!("tls.cert_file/key_file: {error}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        // gRPC servers may refuse a connection that did not negotiate HTTP/2.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(SkipVerifyConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: tls.server_name.clone(),
        })
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<Uri> for SkipVerifyConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let invalid =
                |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("endpoint {uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("endpoint {uri} has no port")))?;
            // Sent as SNI only; nothing checks it against the certificate.
            let name = ServerName::try_from(server_name.unwrap_or_else(|| host.clone()))
                .map_err(|error| invalid(format!("server name: {error}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}
