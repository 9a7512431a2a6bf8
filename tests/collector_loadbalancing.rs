//! The `loadbalancing` exporter through the real spoor-collector binary, in front of
//! three OTLP/gRPC backends on loopback: every trace reaches exactly one backend and
//! the backends share the traces. A backend that goes away keeps its share (the
//! default, as in the OpenTelemetry Collector): the other backends carry on
//! undisturbed, and once it is back it receives everything that was acknowledged
//! meanwhile, exactly once. With `failover`, its share (what was queued for it too)
//! goes to the other backends until it is back, and only its share moves.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use collector_common::{
    eventually, free_port, span_keys, start_backend, trace_request, FakeBackend, RunningBackend,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

const TRACES_PER_REQUEST: u64 = 10;
const SPANS_PER_TRACE: u64 = 3;
const REQUESTS: u64 = 60;

/// The spoor-collector binary, killed when dropped.
struct Collector {
    child: Child,
    grpc_port: u16,
    metrics_port: u16,
    _config: tempfile::NamedTempFile,
}

impl Collector {
    /// `failover`: the exporter's `failover` section, or `None` for the default;
    /// `queue_directory`: a persistent queue there, or memory queues.
    async fn start(
        backend_ports: &[u16],
        failover: Option<&str>,
        queue_directory: Option<&std::path::Path>,
    ) -> Collector {
        let grpc_port = free_port();
        let metrics_port = free_port();
        let hostnames: Vec<String> = backend_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let yaml = format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
exporters:
  loadbalancing:
    routing_key: traceID
    protocol:
      otlp:
        timeout: 2s
        tls:
          insecure: true
        retry_on_failure:
          initial_interval: 100ms
          randomization_factor: 0
          multiplier: 2
          max_interval: 500ms
          max_elapsed_time: {max_elapsed_time}
        sending_queue:
          num_consumers: 20
          {persistent}
    resolver:
      static:
        hostnames: [{}]
    failover: {failover}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [loadbalancing]
  telemetry:
    logs:
      level: error
    metrics:
      address: 127.0.0.1:{metrics_port}
"#,
            hostnames.join(", "),
            // Without failover, retry until the backend is back; with it, hand over soon.
            max_elapsed_time = if failover.is_some() { "1s" } else { "0" },
            failover = failover.unwrap_or("{enabled: false}"),
            persistent = queue_directory.map_or(String::new(), |directory| format!(
                "persistent: {{directory: {}}}",
                directory.display()
            )),
        );
        let mut config = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut config, yaml.as_bytes()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spoor-collector"))
            .arg("--config")
            .arg(config.path())
            .env_remove("SPOOR_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let collector = Collector {
            child,
            grpc_port,
            metrics_port,
            _config: config,
        };
        assert!(
            eventually(Duration::from_secs(30), || async {
                tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
                    .await
                    .is_ok()
            })
            .await,
            "spoor-collector did not start listening"
        );
        collector
    }

    async fn client(&self) -> TraceServiceClient<tonic::transport::Channel> {
        TraceServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc_port))
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series (`name{labels}`), 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request holding traces `first..first + TRACES_PER_REQUEST` in a single resource
/// and scope (so the exporter has to split a scope), span IDs offset by `round`.
fn mixed_request(first: u64, round: u64) -> ExportTraceServiceRequest {
    let mut request = trace_request(first, SPANS_PER_TRACE);
    for trace in first + 1..first + TRACES_PER_REQUEST {
        let other = trace_request(trace, SPANS_PER_TRACE);
        let spans = other.resource_spans[0].scope_spans[0].spans.clone();
        request.resource_spans[0].scope_spans[0].spans.extend(spans);
    }
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.span_id[0] = u8::try_from(round).unwrap();
    }
    request
}

/// Sends `REQUESTS` requests of round `round`; every one must be acknowledged.
async fn send_round(collector: &Collector, round: u64) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    let mut client = collector.client().await;
    let mut sent = BTreeSet::new();
    for request_number in 0..REQUESTS {
        let request = mixed_request(request_number * TRACES_PER_REQUEST, round);
        sent.extend(span_keys(&request));
        client.export(request).await.unwrap();
    }
    sent
}

/// Trace IDs each backend received.
fn traces_of(backend: &FakeBackend) -> BTreeSet<Vec<u8>> {
    backend
        .span_counts()
        .into_keys()
        .map(|(trace_id, _)| trace_id)
        .collect()
}

/// Every span of `sent` arrived exactly once across `backends`.
fn arrived_exactly_once(
    backends: &[Arc<FakeBackend>],
    sent: &BTreeSet<(Vec<u8>, Vec<u8>)>,
) -> bool {
    let mut counts: BTreeMap<(Vec<u8>, Vec<u8>), usize> = BTreeMap::new();
    for backend in backends {
        for (key, count) in backend.span_counts() {
            if sent.contains(&key) {
                *counts.entry(key).or_insert(0) += count;
            }
        }
    }
    counts.len() == sent.len() && counts.values().all(|&count| count == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_stick_to_one_backend_and_a_stopped_backend_keeps_its_share() {
    let backends: Vec<Arc<FakeBackend>> = (0..3).map(|_| FakeBackend::new(Vec::new())).collect();
    let mut running: Vec<Option<RunningBackend>> = Vec::new();
    for backend in &backends {
        running.push(Some(
            start_backend(Arc::clone(backend), "127.0.0.1:0").await,
        ));
    }
    let ports: Vec<u16> = running
        .iter()
        .map(|backend| backend.as_ref().unwrap().address.port())
        .collect();
    let collector = Collector::start(&ports, None, None).await;

    // Round 1: all backends up.
    let first = send_round(&collector, 1).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            arrived_exactly_once(&backends, &first)
        })
        .await,
        "every span arrives exactly once"
    );
    let owners: Vec<BTreeSet<Vec<u8>>> = backends.iter().map(|b| traces_of(b)).collect();
    let total_traces = (REQUESTS * TRACES_PER_REQUEST) as usize;
    assert_eq!(
        owners.iter().map(BTreeSet::len).sum::<usize>(),
        total_traces
    );
    for (index, traces) in owners.iter().enumerate() {
        // A fair share is a third; the ring's spread keeps each well above a sixth.
        assert!(
            traces.len() > total_traces / 6,
            "backend {index} got {} of {total_traces} traces",
            traces.len()
        );
    }
    // Counted once the backend's answer is in, a moment after it recorded the spans.
    assert!(
        eventually(Duration::from_secs(5), || async {
            collector
                .metric("otelcol_exporter_sent_spans_total{exporter=\"loadbalancing\"}")
                .await
                == first.len() as f64
        })
        .await
    );
    assert_eq!(
        collector
            .metric("otelcol_loadbalancer_num_backends{resolver=\"static\"}")
            .await,
        3.0
    );

    // Round 2: the second backend is down. Requests are still acknowledged (its
    // queue holds its share); the others get their own traces and none of its.
    let stopped = 1;
    running[stopped].take().unwrap().stop().await;
    let before_outage: Vec<usize> = backends.iter().map(|b| b.received().len()).collect();
    let second = send_round(&collector, 2).await;
    let expected_elsewhere: BTreeSet<(Vec<u8>, Vec<u8>)> = second
        .iter()
        .filter(|(trace_id, _)| !owners[stopped].contains(trace_id))
        .cloned()
        .collect();
    let others: Vec<Arc<FakeBackend>> = backends
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != stopped)
        .map(|(_, backend)| Arc::clone(backend))
        .collect();
    assert!(
        eventually(Duration::from_secs(20), || async {
            arrived_exactly_once(&others, &expected_elsewhere)
        })
        .await,
        "the running backends get their share while one is down"
    );
    assert_eq!(backends[stopped].received().len(), before_outage[stopped]);
    for (index, backend) in backends.iter().enumerate() {
        assert!(
            traces_of(backend).is_subset(&owners[index]),
            "backend {index} received a trace it did not own"
        );
    }
    let failed_attempts = format!(
        "otelcol_loadbalancer_backend_outcome_total{{endpoint=\"127.0.0.1:{}\",success=\"false\"}}",
        ports[stopped]
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            collector.metric(&failed_attempts).await > 0.0
        })
        .await
    );

    // The backend comes back on its address: what was acknowledged arrives, once.
    running[stopped] = Some(
        start_backend(
            Arc::clone(&backends[stopped]),
            &format!("127.0.0.1:{}", ports[stopped]),
        )
        .await,
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            arrived_exactly_once(&backends, &second)
        })
        .await,
        "the backend that was down receives its share once back"
    );
    for (index, backend) in backends.iter().enumerate() {
        assert_eq!(
            traces_of(backend),
            owners[index],
            "backend {index} kept its traces"
        );
    }
    let succeeded = format!(
        "otelcol_loadbalancer_backend_outcome_total{{endpoint=\"127.0.0.1:{}\",success=\"true\"}}",
        ports[stopped]
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            collector.metric(&succeeded).await > 0.0
        })
        .await
    );

    drop(collector);
    for backend in running.into_iter().flatten() {
        backend.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failover_a_stopped_backend_hands_its_share_to_the_others_until_back() {
    failover_scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failover_persistent_queues_hand_over_too() {
    let directory = tempfile::tempdir().unwrap();
    failover_scenario(Some(directory.path())).await;
}

async fn failover_scenario(queue_directory: Option<&std::path::Path>) {
    let backends: Vec<Arc<FakeBackend>> = (0..3).map(|_| FakeBackend::new(Vec::new())).collect();
    let mut running: Vec<Option<RunningBackend>> = Vec::new();
    for backend in &backends {
        running.push(Some(
            start_backend(Arc::clone(backend), "127.0.0.1:0").await,
        ));
    }
    let ports: Vec<u16> = running
        .iter()
        .map(|backend| backend.as_ref().unwrap().address.port())
        .collect();
    let collector = Collector::start(
        &ports,
        Some("{enabled: true, unhealthy_after: 500ms, probe_interval: 200ms}"),
        queue_directory,
    )
    .await;

    let first = send_round(&collector, 1).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            arrived_exactly_once(&backends, &first)
        })
        .await
    );
    let owners: Vec<BTreeSet<Vec<u8>>> = backends.iter().map(|b| traces_of(b)).collect();
    assert!(owners.iter().all(|traces| !traces.is_empty()));

    // Round 2 right after the stop (queued for the stopped backend, handed over once its
    // retries are exhausted), round 3 once it counts as down (routed past it at once):
    // every span is acknowledged and arrives exactly once at the other two.
    let stopped = 1;
    running[stopped].take().unwrap().stop().await;
    let second = send_round(&collector, 2).await;
    let failed_attempts = format!(
        "otelcol_loadbalancer_backend_outcome_total{{endpoint=\"127.0.0.1:{}\",success=\"false\"}}",
        ports[stopped]
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            collector.metric(&failed_attempts).await > 0.0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let third = send_round(&collector, 3).await;
    let others: Vec<Arc<FakeBackend>> = backends
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != stopped)
        .map(|(_, backend)| Arc::clone(backend))
        .collect();
    for (round, sent) in [(2, &second), (3, &third)] {
        assert!(
            eventually(Duration::from_secs(30), || async {
                arrived_exactly_once(&others, sent)
            })
            .await,
            "round {round}: every span reaches the backends that are up, once"
        );
    }
    // Only the stopped backend's share moved.
    for (index, backend) in backends.iter().enumerate() {
        if index != stopped {
            assert!(traces_of(backend)
                .is_subset(&owners[index].union(&owners[stopped]).cloned().collect()));
        }
    }

    // Back on its address: the probe sees it, and its share returns to it.
    running[stopped] = Some(
        start_backend(
            Arc::clone(&backends[stopped]),
            &format!("127.0.0.1:{}", ports[stopped]),
        )
        .await,
    );
    let recovered = format!(
        "otelcol_loadbalancer_backend_outcome_total{{endpoint=\"127.0.0.1:{}\",success=\"true\"}}",
        ports[stopped]
    );
    let before = collector.metric(&recovered).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            collector.metric(&recovered).await > before
        })
        .await,
        "the probe reaches the backend again"
    );
    let fourth = send_round(&collector, 4).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            arrived_exactly_once(&backends, &fourth)
        })
        .await
    );
    let back_home: BTreeSet<(Vec<u8>, Vec<u8>)> = fourth
        .iter()
        .filter(|(trace_id, _)| owners[stopped].contains(trace_id))
        .cloned()
        .collect();
    let at_stopped: BTreeSet<(Vec<u8>, Vec<u8>)> =
        backends[stopped].span_counts().into_keys().collect();
    assert!(back_home.is_subset(&at_stopped), "its traces return to it");

    drop(collector);
    for backend in running.into_iter().flatten() {
        backend.stop().await;
    }
}
