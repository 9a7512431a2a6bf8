//! Authentication on the OTLP/gRPC receiver against the generated tonic client: refusals
//! never reach the consumer, and a token's tenant is the one the consumer sees.

mod receiver_support;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use receiver_support::{make_request, start_grpc_with_auth, ScriptedConsumer};
use spoor::auth::{
    AuthConfig, AuthLayer, AuthRefusals, Credential, Secret, UNAUTHENTICATED_MESSAGE,
};
use spoor::tenant::{TenantId, SINGLE_TENANT};
use tonic::Code;

const TOKEN: &str = "ingest-token-0123";
const ACME_TOKEN: &str = "acme-token-4567";

fn request(
    authorization: Option<&str>,
    tenant: Option<&str>,
) -> tonic::Request<spoor::otlp::OtlpExportRequest> {
    let mut request = tonic::Request::new(make_request(3));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii metadata"));
    }
    if let Some(value) = tenant {
        request
            .metadata_mut()
            .insert("x-scope-orgid", value.parse().expect("ascii metadata"));
    }
    request
}

#[tokio::test]
async fn grpc_receiver_requires_a_token_and_takes_the_tenant_from_it() {
    let config = AuthConfig {
        credentials: vec![
            Credential::Bearer {
                token: Secret::for_test(TOKEN),
                tenant: None,
            },
            Credential::Bearer {
                token: Secret::for_test(ACME_TOKEN),
                tenant: Some(TenantId::new("acme").expect("tenant")),
            },
        ],
    };
    let refusals = AuthRefusals::default();
    let layer = AuthLayer::for_listener("otlp grpc", &config, &refusals);
    let consumer = ScriptedConsumer::new();
    let server = start_grpc_with_auth(Arc::clone(&consumer), 1 << 20, layer).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");

    for authorization in [None, Some("Bearer wrong"), Some("Basic Zm9vOmJhcg==")] {
        let status = client
            .export(request(authorization, None))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{authorization:?}");
        assert_eq!(status.message(), UNAUTHENTICATED_MESSAGE);
    }
    assert!(consumer.batches().is_empty());
    assert_eq!(refusals.get("otlp grpc", "missing"), 1);
    assert_eq!(refusals.get("otlp grpc", "invalid"), 2);

    let bearer = format!("Bearer {TOKEN}");
    client
        .export(request(Some(&bearer), Some("team-b")))
        .await
        .expect("accepted");
    let acme = format!("Bearer {ACME_TOKEN}");
    client
        .export(request(Some(&acme), None))
        .await
        .expect("accepted");
    let status = client
        .export(request(Some(&acme), Some("team-b")))
        .await
        .expect_err("conflict");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("\"team-b\"") && !status.message().contains(ACME_TOKEN));

    let tenants: Vec<String> = consumer
        .batches()
        .iter()
        .map(|batch| batch.tenant.to_string())
        .collect();
    // A token without a tenant trusts the header; one with a tenant overrides it.
    assert_eq!(tenants, ["team-b", "acme"]);
    assert_ne!(tenants[1], SINGLE_TENANT);
    server.stop().await.expect("clean stop");
}
