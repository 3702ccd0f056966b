//! Traces of the built binary over OTLP/gRPC (`--otlp-endpoint`): an OTLP receiver here (the
//! collector's TraceService as a tonic server) gets the spans of one RPC, in the trace and under
//! the span the caller named in `traceparent`; the RPC's JSON log line carries that trace id.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{self, Started};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use provisiond::server::principal::Role;
use provisiond::server::tokens::line_for;
use tonic::metadata::MetadataValue;

const TOKEN: &str = "a-token-from-openssl-rand-0123456789";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const SET_SPAN: &str = "/provision.v1.ProvisionPolicyService/SetProvisionPolicy";

/// Every span exported to it, in arrival order.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Waits until spans of every name in `names` have arrived.
    async fn wait_for(&self, names: &[&str]) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if names
                .iter()
                .all(|name| spans.iter().any(|span| span.name == *name))
            {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans {names:?} did not all arrive; got {:?}",
                spans.iter().map(|span| &span.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .clone()?
        .value
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|span| span.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_an_rpc_reach_the_otlp_receiver_under_the_callers_traceparent() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_address = listener.local_addr().unwrap();
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let data_dir = tempfile::tempdir().unwrap();
    let tokens = data_dir.path().join("tokens");
    std::fs::write(&tokens, line_for("ci", Role::Writer, TOKEN).unwrap()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_provisiond"));
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data_dir.path().join("data"))
        .arg("--auth-tokens-file")
        .arg(&tokens)
        .arg("--otlp-endpoint")
        .arg(format!("http://{otlp_address}"))
        .env_remove("PROVISIOND_STORE")
        // Batches every 100 ms instead of 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let server = match process::start_command(command) {
        Started::Listening(server) => server,
        Started::Exited { status, log } => panic!("provisiond exited ({status}): {log:#?}"),
    };

    let mut client = ProvisionPolicyServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let mut request = tonic::Request::new(set_request(
        resource(entitlement("traces", "a"), webhook("hook")),
        "",
    ));
    let metadata = request.metadata_mut();
    metadata.insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")).unwrap(),
    );
    metadata.insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {TOKEN}")).unwrap(),
    );
    client.set_provision_policy(request).await.expect("set");

    let spans = receiver
        .wait_for(&[SET_SPAN, "policy.validate", "store.write", "store.commit"])
        .await;
    let spans: Vec<Span> = spans
        .into_iter()
        .filter(|span| hex(&span.trace_id) == TRACE_ID)
        .collect();
    let rpc = named(&spans, SET_SPAN);
    assert_eq!(hex(&rpc.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(
        rpc.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(
        attribute(rpc, "rpc.method"),
        Some(Value::StringValue("SetProvisionPolicy".into()))
    );
    assert_eq!(
        attribute(rpc, "rpc.service"),
        Some(Value::StringValue(
            "provision.v1.ProvisionPolicyService".into()
        ))
    );
    assert_eq!(
        attribute(rpc, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    assert_eq!(
        attribute(rpc, "enduser.id"),
        Some(Value::StringValue("ci".into()))
    );
    let validate = named(&spans, "policy.validate");
    assert_eq!(validate.parent_span_id, rpc.span_id);
    assert_eq!(attribute(validate, "violations"), Some(Value::IntValue(0)));
    let write = named(&spans, "store.write");
    assert_eq!(write.parent_span_id, rpc.span_id);
    assert_eq!(attribute(write, "batch_size"), Some(Value::IntValue(1)));
    let commit = named(&spans, "store.commit");
    assert_eq!(commit.parent_span_id, write.span_id);
    assert_eq!(attribute(commit, "batch_size"), Some(Value::IntValue(1)));
    // Children end inside their parents.
    for child in [validate, write, commit] {
        assert!(child.start_time_unix_nano >= rpc.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= rpc.end_time_unix_nano);
    }

    let (status, log) = server.terminate();
    assert!(status.success(), "{log:#?}");
    let lines: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| {
            line["fields"]["message"] == "rpc" && line["fields"]["method"] == SET_SPAN
        })
        .collect();
    assert_eq!(lines.len(), 1, "{log:#?}");
    assert_eq!(lines[0]["span"]["trace_id"], TRACE_ID, "{:#}", lines[0]);
    collector.abort();
}
