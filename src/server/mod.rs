//! spoor-server: wiring of the parts, start-up order and ordered shutdown.
//!
//! Start-up (readiness is honest): bind every listener → serve the API (so `/ready`
//! answers 503 while starting) → open storage and list blocks → replay the WAL (redoing
//! an interrupted cut) and start the WAL writer → remove orphaned block folders (nothing
//! of ours is uploading yet) → start the OTLP receivers → `READY=1`.
//!
//! Shutdown on SIGTERM: `STOPPING=1` → receivers stop accepting and finish in-flight
//! requests → the WAL writer syncs what was queued and stops → background loops stop
//! (an unfinished block upload is abandoned: its data is still in the WAL; an unfinished
//! compaction leaves at most an orphan) → API stops.

pub mod api;
pub mod block;
pub mod blocklist;
pub mod compactor;
pub mod flush;
pub mod generator;
pub mod head;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod peers;
pub mod query;
pub mod replay;
pub mod retention;
pub mod search;
pub mod storage;
pub mod wal;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthLayer;
use crate::config::{BackendConfig, HeadConfig, ServerConfig, ServerTlsConfig};
use crate::listener::{Alpn, Incoming};
use crate::receiver::TraceConsumer;
use crate::runtime::systemd;
use api::{ApiState, Readiness};
use blocklist::BlockList;
use compactor::lease::TenantLeases;
use compactor::Compactor;
use flush::Flusher;
use generator::Generator;
use head::{CutReason, Head};
use ingest::Ingest;
use limits::QueryLimiter;
use metrics::ServerMetrics;
use peers::Peers;
use query::Querier;
use retention::Retention;
use search::SearchService;
use storage::BlockStore;
use wal::WalDir;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Listener {
        what: &'static str,
        source: crate::listener::ListenerError,
    },
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("write-ahead log: {0}")]
    Wal(#[from] wal::WalError),
    #[error("write-ahead log replay: {0}")]
    Replay(#[from] replay::ReplayError),
    #[error("receiver: {0}")]
    Receiver(String),
    #[error("cannot start the metrics generator thread: {0}")]
    Generator(std::io::Error),
}

/// How often the cut policy is evaluated.
const CUT_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Upper bound for the initial storage listing retries' backoff.
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Binds `address` and, when `tls` is set, loads the certificates (watched from then on).
async fn bind(
    what: &'static str,
    address: SocketAddr,
    tls: Option<&ServerTlsConfig>,
    alpn: Alpn,
) -> Result<Incoming, ServerError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind {
            what,
            address,
            source,
        })?;
    Incoming::new(listener, tls, alpn, what)
        .map_err(|source| ServerError::Listener { what, source })
}

/// Runs spoor-server until `shutdown` is cancelled, then drains in order.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    let started = Instant::now();
    let api_listener = bind(
        "api",
        config.api.listen_address,
        config.api.tls.as_ref(),
        Alpn::Http,
    )
    .await?;
    let grpc_listener = bind(
        "otlp grpc",
        config.otlp.grpc.listen_address,
        config.otlp.grpc.tls.as_ref(),
        Alpn::Grpc,
    )
    .await?;
    let http_listener = bind(
        "otlp http",
        config.otlp.http.listen_address,
        config.otlp.http.tls.as_ref(),
        Alpn::Http,
    )
    .await?;
    tracing::info!(
        api = %config.api.listen_address,
        api_tls = api_listener.is_tls(),
        otlp_grpc = %config.otlp.grpc.listen_address,
        otlp_grpc_tls = grpc_listener.is_tls(),
        otlp_http = %config.otlp.http.listen_address,
        otlp_http_tls = http_listener.is_tls(),
        "listeners bound"
    );

    let metrics = Arc::new(ServerMetrics::new());
    let auth_refusals = metrics.auth_refusals();
    let generator = match config.metrics_generator.enabled_anywhere() {
        true => Some(
            Generator::start(config.metrics_generator.clone(), Arc::clone(&metrics))
                .map_err(ServerError::Generator)?,
        ),
        false => None,
    };
    let readiness = Arc::new(Readiness::default());
    let head = Arc::new(Mutex::new(Head::default()));
    let store = BlockStore::from_config(&config.storage)?;
    let blocklist = Arc::new(BlockList::new(store, Arc::clone(&metrics)));
    let querier = Querier::new(Arc::clone(&head), Arc::clone(&blocklist));
    let search = SearchService::new(
        Arc::clone(&head),
        Arc::clone(&blocklist),
        config.query.clone(),
    );

    let peers = Peers::new(&config.cluster, Arc::clone(&metrics)).map(Arc::new);
    let api_cancel = CancellationToken::new();
    let api_task = {
        let state = ApiState {
            querier,
            search: search.clone(),
            metrics: Arc::clone(&metrics),
            generator: generator.as_ref().map(|(generator, _)| generator.clone()),
            readiness: Arc::clone(&readiness),
            queries: Arc::new(QueryLimiter::new(config.limits.clone())),
            peers: peers.clone(),
        };
        let cancel = api_cancel.clone();
        // Probes reach /ready without credentials; everything else, /metrics included,
        // needs one when api.auth lists any.
        let api_auth = AuthLayer::for_listener("api", &config.api.auth, &auth_refusals)
            .map(|layer| layer.exempt(&["/ready"]));
        let api_router = crate::auth::protect(api::router(state), api_auth);
        tokio::spawn(async move {
            let served = axum::serve(api_listener, api_router)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "api server failed");
            }
        })
    };

    systemd::notify_status("opening storage");
    if !load_blocklist(&blocklist, &shutdown).await {
        api_cancel.cancel();
        let _ = api_task.await;
        return Ok(());
    }

    systemd::notify_status("replaying write-ahead log");
    let IngestParts {
        ingest,
        writer_thread,
        flusher,
        instance_id,
    } = open_ingest(
        &config,
        &head,
        &blocklist,
        &metrics,
        generator.as_ref().map(|(generator, _)| generator.clone()),
    )
    .await?;
    search.set_instance_id(instance_id);
    if let Some(peers) = &peers {
        peers.set_instance_id(instance_id);
    }

    // Replay has rewritten any block a crash cut short, and nothing else of this server
    // writes yet, so every block folder without a meta is a leftover. A local directory
    // is this server's alone; a bucket may have uploads of other servers in flight.
    let orphan_grace = match config.storage.backend {
        BackendConfig::Local { .. } => Duration::ZERO,
        BackendConfig::S3(_) => compactor::ORPHAN_GRACE,
    };
    systemd::notify_status("removing orphaned blocks");
    compactor::remove_orphans(&blocklist, &metrics, orphan_grace, SystemTime::now()).await;

    let receivers_cancel = CancellationToken::new();
    let consumer: Arc<dyn TraceConsumer> = Arc::new(ingest.clone());
    let grpc_task = tokio::spawn(crate::receiver::grpc::serve_grpc(
        grpc_listener,
        Arc::clone(&consumer),
        config.otlp.grpc.max_recv_msg_bytes,
        AuthLayer::for_listener("otlp grpc", &config.otlp.grpc.auth, &auth_refusals),
        receivers_cancel.clone(),
    ));
    let http_task = tokio::spawn(crate::receiver::http::serve_http(
        http_listener,
        Arc::clone(&consumer),
        config.otlp.http.max_request_body_bytes,
        AuthLayer::for_listener("otlp http", &config.otlp.http.auth, &auth_refusals),
        receivers_cancel.clone(),
    ));

    let background_cancel = CancellationToken::new();
    let cut_task = spawn_cut_loop(
        ingest.clone(),
        flusher,
        config.head.clone(),
        background_cancel.clone(),
    );
    let poll_task = Arc::clone(&blocklist)
        .spawn_poller(config.storage.blocklist_poll, background_cancel.clone());
    // A bucket may be shared with other servers: each tenant is compacted and swept by
    // whichever holds its lease. Retention then runs only where compaction does, like
    // Tempo's compactor, so a server that does not compact never takes a lease.
    let shared_bucket = matches!(config.storage.backend, BackendConfig::S3(_));
    let leases = Arc::new(match shared_bucket {
        true => TenantLeases::shared(
            blocklist.store().clone(),
            instance_id,
            config.compaction.lease_duration,
        ),
        false => TenantLeases::exclusive(),
    });
    if shared_bucket {
        // An index older than this was not rewritten by a live holder: its holder died
        // and the lease has not been taken over yet, or nobody compacts the tenant.
        let max_age = config.compaction.lease_duration * 2 + config.compaction.cycle;
        blocklist.use_tenant_index(Arc::clone(&leases), max_age);
    }
    let retention_task = (config.compaction.enabled || !shared_bucket).then(|| {
        Retention::new(
            Arc::clone(&blocklist),
            config.retention.clone(),
            Arc::clone(&metrics),
        )
        .with_leases(Arc::clone(&leases))
        .spawn(background_cancel.clone())
    });
    let compactor_task = config.compaction.enabled.then(|| {
        Compactor::new(
            Arc::clone(&blocklist),
            config.compaction.clone(),
            config.retention.clone(),
            Arc::clone(&metrics),
        )
        .with_leases(Arc::clone(&leases))
        .spawn(background_cancel.clone())
    });
    let remote_write_cancel = CancellationToken::new();
    let remote_write_task = generator.as_ref().and_then(|(generator, _)| {
        generator::remote_write::spawn(
            generator.clone(),
            config.metrics_generator.remote_write.clone(),
            Arc::clone(&metrics),
            remote_write_cancel.clone(),
        )
    });
    let watchdog_task = {
        let ingest = ingest.clone();
        systemd::spawn_watchdog(
            move || {
                let ingest = ingest.clone();
                async move { ingest.barrier().await.is_ok() }
            },
            background_cancel.clone(),
        )
    };

    readiness.set_ready();
    systemd::notify_ready("ready");
    tracing::info!(startup = ?started.elapsed(), %instance_id, "spoor-server ready");

    shutdown.cancelled().await;
    let deadline = Instant::now() + config.shutdown.timeout;
    systemd::notify_stopping();
    readiness.set_stopping();
    tracing::info!("draining: stopping receivers");
    receivers_cancel.cancel();
    for (name, task) in [("otlp grpc", grpc_task), ("otlp http", http_task)] {
        match await_until(task, deadline).await {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(error))) => tracing::error!(receiver = name, %error, "receiver failed"),
            Some(Err(error)) => tracing::error!(receiver = name, %error, "receiver task panicked"),
            None => tracing::warn!(receiver = name, "receiver did not stop before the deadline"),
        }
    }
    tracing::info!("draining: syncing the write-ahead log");
    if let Err(error) = ingest.shutdown().await {
        tracing::warn!(%error, "wal writer was already stopped");
    }
    let writer_join = tokio::task::spawn_blocking(move || writer_thread.join());
    if await_until(writer_join, deadline).await.is_none() {
        tracing::warn!("wal writer did not stop before the deadline");
    }
    background_cancel.cancel();
    for task in [
        Some(cut_task),
        Some(poll_task),
        retention_task,
        compactor_task,
        watchdog_task,
    ]
    .into_iter()
    .flatten()
    {
        let _ = await_until(task, deadline).await;
    }
    if let Some((generator, thread)) = generator {
        // Spans acknowledged before the receivers stopped are counted, then pushed
        // once more, so the last counts reach Prometheus.
        let stopped = tokio::task::spawn_blocking(move || {
            generator.stop();
            thread.join()
        });
        let _ = await_until(stopped, deadline).await;
        remote_write_cancel.cancel();
        if let Some(task) = remote_write_task {
            let _ = await_until(task, deadline).await;
        }
    }
    api_cancel.cancel();
    let _ = await_until(api_task, deadline).await;
    tracing::info!(took = ?started.elapsed(), "spoor-server stopped");
    Ok(())
}

/// The write path once the WAL is replayed.
pub(crate) struct IngestParts {
    pub(crate) ingest: Ingest,
    pub(crate) writer_thread: std::thread::JoinHandle<()>,
    pub(crate) flusher: Flusher,
    pub(crate) instance_id: uuid::Uuid,
}

/// Opens the WAL, replays it into `head` (redoing a cut a crash interrupted) and starts
/// the writer thread on a fresh segment.
pub(crate) async fn open_ingest(
    config: &ServerConfig,
    head: &Arc<Mutex<Head>>,
    blocklist: &Arc<BlockList>,
    metrics: &Arc<ServerMetrics>,
    generator: Option<Generator>,
) -> Result<IngestParts, ServerError> {
    let wal = WalDir::open(&config.wal.dir)?;
    let instance_id = wal.instance_id()?;
    let flusher = Flusher::new(
        Arc::clone(blocklist),
        Arc::clone(head),
        wal.clone(),
        instance_id,
        Arc::clone(metrics),
    );
    let summary = replay::replay(&wal, head, &flusher, metrics).await?;
    tracing::info!(
        segments = summary.segments,
        records = summary.records,
        damaged_regions = summary.damaged_regions,
        damaged_bytes = summary.damaged_bytes,
        undecodable_records = summary.undecodable_records,
        redone_cuts = summary.redone_cuts,
        live_traces = head.lock().live_traces(),
        "wal replayed"
    );
    let (ingest, writer_thread) = Ingest::start(
        wal,
        summary.last_segment,
        Arc::clone(head),
        config,
        Arc::clone(metrics),
        generator,
    )?;
    Ok(IngestParts {
        ingest,
        writer_thread,
        flusher,
        instance_id,
    })
}

/// Awaits a task until the deadline; `None` if it did not finish in time.
async fn await_until<T>(
    task: JoinHandle<T>,
    deadline: Instant,
) -> Option<Result<T, tokio::task::JoinError>> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(remaining, task).await.ok()
}

/// Lists the backend's blocks, retrying until it answers or shutdown is asked.
/// Returns false on shutdown.
async fn load_blocklist(blocklist: &BlockList, shutdown: &CancellationToken) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match blocklist.refresh().await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "storage is not reachable yet");
                systemd::notify_status(&format!("storage not reachable: {error}"));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(STORAGE_RETRY_MAX);
    }
}

/// Cuts the head into blocks when it grows past `max_block_bytes` (everything goes to
/// the block) or its oldest live trace is older than `max_block_duration` (idle traces go
/// to the block, busy ones are carried); one cut at a time, each flushed before the next
/// so the `flushed-through` marker only moves forward.
fn spawn_cut_loop(
    ingest: Ingest,
    flusher: Flusher,
    head_config: HeadConfig,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(CUT_CHECK_INTERVAL) => {}
            }
            let reason = {
                let head = ingest.head().lock();
                if head.live_bytes() >= head_config.max_block_bytes {
                    Some(CutReason::Size)
                } else if head
                    .oldest_append()
                    .is_some_and(|t| t.elapsed() >= head_config.max_block_duration)
                {
                    Some(CutReason::Age)
                } else {
                    None
                }
            };
            let Some(reason) = reason else { continue };
            // A size cut must free memory: at full speed every trace is younger than
            // trace_idle, and carrying them would flush nothing while rewriting them all
            // into the WAL. Traces still growing continue in the next block.
            let carry_nothing = reason == CutReason::Size;
            match ingest.cut(reason, carry_nothing).await {
                Ok(Some(job)) => {
                    if let Err(error) = flusher
                        .flush_with_retry(&job.partition.flushing, job.reason.as_str(), &cancel)
                        .await
                    {
                        tracing::info!(%error, "block flush abandoned; the data stays in the wal");
                        break;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "block cut failed");
                }
            }
        }
    })
}
