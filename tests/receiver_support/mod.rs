//! Shared fixtures for the receiver integration tests: a scripted [`TraceConsumer`] that
//! records what it receives, request builders, and servers on ephemeral loopback ports.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::EntityRef;
use parking_lot::Mutex;
use spoor::auth::AuthLayer;
use spoor::listener::{Alpn, Incoming};
use spoor::otlp::{
    OtlpAnyValue, OtlpArrayValue, OtlpEvent, OtlpExportRequest, OtlpKeyValue, OtlpKeyValueList,
    OtlpLink, OtlpResource, OtlpResourceSpans, OtlpScope, OtlpScopeSpans, OtlpSpan, OtlpStatus,
    OtlpValue,
};
use spoor::receiver::{
    serve_grpc, serve_http, Accepted, ConsumeError, ReceiverError, TraceBatch, TraceConsumer,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the consumer answers next.
#[derive(Debug, Clone)]
pub enum Answer {
    Accept,
    AcceptWithRejections {
        rejected_spans: u64,
        message: String,
    },
    Full {
        retry_after: Duration,
    },
    Closed,
    Invalid(String),
    Internal(String),
}

/// A consumer that records every batch and answers as scripted. With a gate installed, each
/// call waits for a permit, which lets tests hold a request in flight.
#[derive(Debug)]
pub struct ScriptedConsumer {
    answer: Mutex<Answer>,
    batches: Mutex<Vec<TraceBatch>>,
    gate: Mutex<Option<Arc<Semaphore>>>,
    arrived: Notify,
}

impl ScriptedConsumer {
    pub fn new() -> Arc<ScriptedConsumer> {
        Arc::new(ScriptedConsumer {
            answer: Mutex::new(Answer::Accept),
            batches: Mutex::new(Vec::new()),
            gate: Mutex::new(None),
            arrived: Notify::new(),
        })
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock() = answer;
    }

    pub fn batches(&self) -> Vec<TraceBatch> {
        self.batches.lock().clone()
    }

    /// Makes every following call wait for a permit on the returned semaphore.
    pub fn hold(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock() = Some(Arc::clone(&gate));
        gate
    }

    /// Resolves once a call has reached the consumer (recorded before any gate).
    pub async fn wait_for_arrival(&self) {
        self.arrived.notified().await;
    }
}

#[async_trait::async_trait]
impl TraceConsumer for ScriptedConsumer {
    async fn consume(&self, batch: TraceBatch) -> Result<Accepted, ConsumeError> {
        self.batches.lock().push(batch);
        self.arrived.notify_one();
        let gate = self.gate.lock().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        let answer = self.answer.lock().clone();
        match answer {
            Answer::Accept => Ok(Accepted::default()),
            Answer::AcceptWithRejections {
                rejected_spans,
                message,
            } => Ok(Accepted {
                rejected_spans,
                error_message: message,
            }),
            Answer::Full { retry_after } => Err(ConsumeError::Full {
                what: "ingest queue",
                retry_after,
            }),
            Answer::Closed => Err(ConsumeError::Closed),
            Answer::Invalid(message) => Err(ConsumeError::Invalid(message)),
            Answer::Internal(message) => Err(ConsumeError::Internal(message)),
        }
    }
}

fn string_attribute(key: &str, value: &str) -> OtlpKeyValue {
    attribute(key, OtlpValue::StringValue(value.to_string()))
}

fn attribute(key: &str, value: OtlpValue) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.to_string(),
        value: Some(OtlpAnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A deterministic trace ID for span `index`.
pub fn trace_id(index: usize) -> Vec<u8> {
    let mut id = [0x5bu8; 16];
    id[8..].copy_from_slice(&(index as u64 + 1).to_be_bytes());
    id.to_vec()
}

/// A deterministic span ID for span `index`.
pub fn span_id(index: usize) -> Vec<u8> {
    (index as u64 + 0xeee1_9b7e_c3c1_b100)
        .to_be_bytes()
        .to_vec()
}

/// One resource with one scope and `num_spans` spans carrying every attribute type, events,
/// links and a status, so equality checks cover the whole message.
pub fn make_request(num_spans: usize) -> OtlpExportRequest {
    let spans = (0..num_spans)
        .map(|index| OtlpSpan {
            trace_id: trace_id(index),
            span_id: span_id(index),
            parent_span_id: if index == 0 { Vec::new() } else { span_id(0) },
            trace_state: "vendor=1".to_string(),
            flags: 1,
            name: format!("span-{index}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + index as u64,
            end_time_unix_nano: 1_700_000_000_500_000_000 + index as u64,
            attributes: vec![
                string_attribute("http.route", "/cart/{id}"),
                attribute("http.status_code", OtlpValue::IntValue(-200)),
                attribute("ratio", OtlpValue::DoubleValue(0.25)),
                attribute("sampled", OtlpValue::BoolValue(true)),
                attribute("blob", OtlpValue::BytesValue(vec![0, 1, 254, 255])),
                attribute(
                    "list",
                    OtlpValue::ArrayValue(OtlpArrayValue {
                        values: vec![OtlpAnyValue {
                            value: Some(OtlpValue::StringValue("a".to_string())),
                        }],
                    }),
                ),
                attribute(
                    "map",
                    OtlpValue::KvlistValue(OtlpKeyValueList {
                        values: vec![attribute("inner", OtlpValue::IntValue(7))],
                    }),
                ),
            ],
            dropped_attributes_count: 1,
            events: vec![OtlpEvent {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "retry".to_string(),
                attributes: vec![string_attribute("reason", "timeout")],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![OtlpLink {
                trace_id: trace_id(index + 1000),
                span_id: span_id(index + 1000),
                trace_state: "linked=1".to_string(),
                attributes: vec![string_attribute("link.kind", "follows")],
                dropped_attributes_count: 4,
                flags: 1,
            }],
            dropped_links_count: 5,
            status: Some(OtlpStatus {
                message: "boom".to_string(),
                code: 2,
            }),
        })
        .collect();
    OtlpExportRequest {
        resource_spans: vec![OtlpResourceSpans {
            resource: Some(OtlpResource {
                attributes: vec![string_attribute("service.name", "checkout")],
                dropped_attributes_count: 6,
                entity_refs: vec![EntityRef {
                    schema_url: "https://example.com/entity".to_string(),
                    r#type: "service".to_string(),
                    id_keys: vec!["service.name".to_string()],
                    description_keys: Vec::new(),
                }],
            }),
            scope_spans: vec![OtlpScopeSpans {
                scope: Some(OtlpScope {
                    name: "checkout-lib".to_string(),
                    version: "1.2.3".to_string(),
                    attributes: vec![string_attribute("scope.attr", "x")],
                    dropped_attributes_count: 7,
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.21.0".to_string(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.20.0".to_string(),
        }],
    }
}

/// A server running on an ephemeral loopback port.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ReceiverError>>,
}

impl RunningServer {
    /// Cancels and waits (bounded) for the server to return.
    pub async fn stop(self) -> Result<(), ReceiverError> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10s")
            .expect("server task did not panic")
    }
}

pub async fn start_grpc(
    consumer: Arc<ScriptedConsumer>,
    max_recv_msg_bytes: usize,
) -> RunningServer {
    start_grpc_with_auth(consumer, max_recv_msg_bytes, None).await
}

pub async fn start_grpc_with_auth(
    consumer: Arc<ScriptedConsumer>,
    max_recv_msg_bytes: usize,
    auth: Option<AuthLayer>,
) -> RunningServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let listener = Incoming::new(listener, None, Alpn::Grpc, "otlp grpc").expect("listener");
    let task = tokio::spawn(serve_grpc(
        listener,
        consumer,
        max_recv_msg_bytes,
        auth,
        shutdown.clone(),
    ));
    RunningServer {
        addr,
        shutdown,
        task,
    }
}

pub async fn start_http(
    consumer: Arc<ScriptedConsumer>,
    max_request_body_bytes: usize,
) -> RunningServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let listener = Incoming::new(listener, None, Alpn::Http, "otlp http").expect("listener");
    let task = tokio::spawn(serve_http(
        listener,
        consumer,
        max_request_body_bytes,
        None,
        shutdown.clone(),
    ));
    RunningServer {
        addr,
        shutdown,
        task,
    }
}
