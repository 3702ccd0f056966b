//! Health and server reflection, as grpcurl, buf curl and load balancers use them.

mod common;

use common::TestServer;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICE: &str = "provision.v1.ProvisionPolicyService";

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check");
    response.into_inner().status()
}

#[tokio::test]
async fn health_is_serving_once_the_store_is_open() {
    let server = TestServer::start().await;
    assert_eq!(health(&server, "").await, ServingStatus::Serving);
    assert_eq!(health(&server, SERVICE).await, ServingStatus::Serving);
}

#[tokio::test]
async fn health_turns_not_serving_on_shutdown() {
    let server = TestServer::start().await;
    let mut client = HealthClient::new(server.channel().await);
    let mut watch = client
        .watch(HealthCheckRequest {
            service: SERVICE.to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("first status").expect("status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let stopping = tokio::spawn(server.stop());
    let next = watch.next().await.expect("second status").expect("status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    drop(client);
    stopping.await.expect("stopped cleanly");
}

macro_rules! reflection_lists_our_service {
    ($name:ident, $module:ident) => {
        #[tokio::test]
        async fn $name() {
            use tonic_reflection::pb::$module::ServerReflectionRequest;
            use tonic_reflection::pb::$module::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$module::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$module::server_reflection_response::MessageResponse;

            let server = TestServer::start().await;
            let mut client = ServerReflectionClient::new(server.channel().await);
            let ask = |message_request| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message_request),
            };
            let requests = tokio_stream::iter(vec![
                ask(MessageRequest::ListServices(String::new())),
                ask(MessageRequest::FileContainingSymbol(
                    "google.rpc.BadRequest".to_owned(),
                )),
                ask(MessageRequest::FileContainingSymbol(
                    "provision.v1.ProvisionPolicy".to_owned(),
                )),
            ]);
            let mut responses = client
                .server_reflection_info(requests)
                .await
                .expect("reflection")
                .into_inner();
            let Some(MessageResponse::ListServicesResponse(list)) = responses
                .next()
                .await
                .expect("list")
                .expect("ok")
                .message_response
            else {
                panic!("expected a service list");
            };
            let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&SERVICE), "{names:?}");
            assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
            for symbol in ["google.rpc.BadRequest", "provision.v1.ProvisionPolicy"] {
                match responses
                    .next()
                    .await
                    .expect("file")
                    .expect("ok")
                    .message_response
                {
                    Some(MessageResponse::FileDescriptorResponse(files)) => {
                        assert!(!files.file_descriptor_proto.is_empty(), "{symbol}")
                    }
                    other => panic!("{symbol}: {other:?}"),
                }
            }
        }
    };
}

reflection_lists_our_service!(reflection_v1_lists_services_and_error_detail_types, v1);
reflection_lists_our_service!(
    reflection_v1alpha_lists_services_and_error_detail_types,
    v1alpha
);

#[tokio::test]
async fn reflection_can_be_turned_off() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let server = TestServer::start_with(|config| config.reflection = false).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect_err("no reflection");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
