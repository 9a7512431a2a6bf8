//! Listening sockets of both binaries: plain TCP, or TLS (rustls) with optional client
//! certificate verification and certificate reload ([`tls`]).
//!
//! [`Incoming`] wraps an already-bound [`TcpListener`] and yields [`Conn`]s; axum serves
//! it directly (`axum::serve::Listener`) and tonic through [`Incoming::into_stream`]. TLS
//! handshakes run in their own tasks with a deadline, so a slow or silent client never
//! holds up accepting the next one; at most [`MAX_PENDING_HANDSHAKES`] run at once and
//! beyond that connections wait in the kernel's backlog. A failed handshake closes that
//! connection only, and is logged with the peer address (a warning at most every
//! [`FAILURE_WARN_INTERVAL`], every one at debug level).

pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, error, info, warn};

use crate::config::ServerTlsConfig;
use tls::{SharedServerConfig, TlsError};

/// A handshake that has not finished by then is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one listener.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Failed handshakes are logged as warnings at most this often per listener.
pub const FAILURE_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What a TLS listener offers in ALPN. gRPC clients refuse a server that does not
/// select `h2`; HTTP listeners speak both versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` only.
    Grpc,
    /// `h2` and `http/1.1`.
    Http,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Grpc => vec![b"h2".to_vec()],
            Alpn::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// Why a listener cannot start serving.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The bound socket's address cannot be read.
    #[error("cannot read the listener address: {0}")]
    LocalAddr(#[source] io::Error),
    /// A TLS file is unusable (the error names it).
    #[error("tls {key}: {error}", key = .0.key(), error = .0)]
    Tls(#[source] TlsError),
}

/// An accepted connection, plain or TLS.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A bound listener serving plain TCP or TLS; see the module documentation.
#[derive(Debug)]
pub struct Incoming {
    name: Arc<str>,
    local_addr: SocketAddr,
    tcp: TcpListener,
    tls: Option<TlsIncoming>,
}

#[derive(Debug)]
struct TlsIncoming {
    current: SharedServerConfig,
    handshakes: Arc<Semaphore>,
    ready_tx: mpsc::Sender<(Conn, SocketAddr)>,
    ready_rx: mpsc::Receiver<(Conn, SocketAddr)>,
    failures: Arc<FailureLog>,
    _reloader: AbortOnDropHandle<()>,
}

impl Incoming {
    /// Serves `tcp` with TLS when `tls` is set, plaintext otherwise; `name` labels logs.
    /// With TLS, the files are loaded now and watched for as long as the listener lives.
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// The socket's address cannot be read, or a TLS file is unusable.
    pub fn new(
        tcp: TcpListener,
        tls: Option<&ServerTlsConfig>,
        alpn: Alpn,
        name: &str,
    ) -> Result<Incoming, ListenerError> {
        let local_addr = tcp.local_addr().map_err(ListenerError::LocalAddr)?;
        let name: Arc<str> = Arc::from(name);
        let tls = match tls {
            Some(config) => Some(TlsIncoming::start(&name, config, alpn)?),
            None => None,
        };
        Ok(Incoming {
            name,
            local_addr,
            tcp,
            tls,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The next connection, TLS handshake done. Never fails: errors accepting are
    /// logged (and followed by a pause when the process is out of resources), failed
    /// handshakes are logged and skipped.
    pub async fn accept(&mut self) -> (Conn, SocketAddr) {
        let Incoming { name, tcp, tls, .. } = self;
        loop {
            let Some(tls) = tls.as_mut() else {
                match tcp.accept().await {
                    Ok((stream, peer)) => {
                        set_nodelay(&stream);
                        return (Conn::Plain(stream), peer);
                    }
                    Err(error) => {
                        accept_error(name, error).await;
                        continue;
                    }
                }
            };
            let handshakes = Arc::clone(&tls.handshakes);
            tokio::select! {
                Some(ready) = tls.ready_rx.recv() => return ready,
                (permit, accepted) = async {
                    // Only an open semaphore is ever used; `ok()` keeps accepting regardless.
                    let permit = handshakes.acquire_owned().await.ok();
                    (permit, tcp.accept().await)
                } => match accepted {
                    Ok((stream, peer)) => {
                        set_nodelay(&stream);
                        tls.start_handshake(stream, peer, permit);
                    }
                    Err(error) => accept_error(name, error).await,
                },
            }
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming_shutdown`.
    pub fn into_stream(self) -> impl Stream<Item = Result<Conn, io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut incoming| async move {
            let (conn, _peer) = incoming.accept().await;
            Some((Ok(conn), incoming))
        })
    }
}

impl TlsIncoming {
    fn start(
        name: &Arc<str>,
        config: &ServerTlsConfig,
        alpn: Alpn,
    ) -> Result<TlsIncoming, ListenerError> {
        let seen = tls::fingerprint(config);
        let server = tls::load_server_config(config, alpn).map_err(ListenerError::Tls)?;
        let current: SharedServerConfig = Arc::new(RwLock::new(Arc::new(server)));
        info!(
            listener = %name,
            cert_file = %config.cert_file.display(),
            client_certificates = if config.client_ca_file.is_some() { "required" } else { "not requested" },
            "tls enabled"
        );
        let reloader = tokio::spawn(tls::reload_loop(
            Arc::clone(name),
            config.clone(),
            alpn,
            Arc::clone(&current),
            seen,
        ));
        let (ready_tx, ready_rx) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        Ok(TlsIncoming {
            current,
            handshakes: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
            ready_tx,
            ready_rx,
            failures: Arc::new(FailureLog::new(Arc::clone(name))),
            _reloader: AbortOnDropHandle::new(reloader),
        })
    }

    fn start_handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        // The configuration of the moment: a reload affects later handshakes only.
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&*self.current.read()));
        let ready_tx = self.ready_tx.clone();
        let failures = Arc::clone(&self.failures);
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    // Fails only when the listener is gone (shutdown): the connection
                    // is then closed like any other not yet served.
                    let _ = ready_tx.send((Conn::Tls(Box::new(stream)), peer)).await;
                }
                Ok(Err(error)) => failures.record(peer, &error),
                Err(_elapsed) => failures.record(peer, &"handshake timed out"),
            }
            drop(permit);
        });
    }
}

/// Rate-limited logging of failed handshakes: scanners and misconfigured clients can
/// fail thousands of times a minute.
#[derive(Debug)]
struct FailureLog {
    listener: Arc<str>,
    state: Mutex<FailureState>,
}

#[derive(Debug, Default)]
struct FailureState {
    last_warning: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    fn new(listener: Arc<str>) -> FailureLog {
        FailureLog {
            listener,
            state: Mutex::new(FailureState::default()),
        }
    }

    fn record(&self, peer: SocketAddr, error: &dyn std::fmt::Display) {
        debug!(listener = %self.listener, %peer, %error, "tls handshake failed");
        let suppressed = {
            let mut state = self.state.lock();
            if state
                .last_warning
                .is_some_and(|last| last.elapsed() < FAILURE_WARN_INTERVAL)
            {
                state.suppressed += 1;
                return;
            }
            state.last_warning = Some(Instant::now());
            std::mem::take(&mut state.suppressed)
        };
        warn!(
            listener = %self.listener,
            %peer,
            %error,
            suppressed_since_last_warning = suppressed,
            "tls handshake failed"
        );
    }
}

fn set_nodelay(stream: &TcpStream) {
    // Small exports are latency-bound; Nagle would hold responses back. Best effort: a
    // socket that refuses still works, only slower.
    let _ = stream.set_nodelay(true);
}

/// As hyper and axum do: errors of one connection are skipped; anything else (out of
/// file descriptors) is logged and followed by a pause so the loop does not spin.
async fn accept_error(listener: &str, error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(listener, %error, "accept failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        Incoming::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Plain(stream) => stream.connect_info(),
            Conn::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(stream) => stream.is_write_vectored(),
            Conn::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
