//! The request log of the built binary (JSON): one line per RPC with method, code, duration,
//! principal, peer and request id; the caller's `x-request-id` is taken and echoed, a missing
//! one is made and echoed; no policy body ever appears in the log.

mod common;

use std::collections::HashMap;

use common::process;
use common::*;
use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;

const SECRET_VALUE: &str = "value-that-must-never-be-logged";

fn with_id<T>(message: T, id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::try_from(id).unwrap());
    request
}

fn echoed<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("x-request-id")
        .expect("echoed")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The `rpc` lines of the log, by request id.
fn rpc_lines(log: &[String]) -> HashMap<String, serde_json::Value> {
    log.iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "rpc")
        .map(|line| {
            (
                line["fields"]["request_id"].as_str().unwrap().to_owned(),
                line["fields"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_gets_one_line_with_its_request_id_and_never_its_body() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = process::start_listening(data_dir.path());
    let mut client = ProvisionPolicyServiceClient::connect(server.endpoint())
        .await
        .unwrap();

    let set = client
        .set_provision_policy(with_id(
            set_request(resource(entitlement("log", "a"), webhook(SECRET_VALUE)), ""),
            "req-set-1",
        ))
        .await
        .expect("set");
    assert_eq!(echoed(&set), "req-set-1");
    let missing = client
        .get_provision_policy(get_request(entitlement("log", "missing"), 0))
        .await
        .expect_err("not found");
    let generated = missing
        .metadata()
        .get("x-request-id")
        .expect("echoed on errors too");
    let generated = generated.to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    let refused = client
        .set_provision_policy(with_id(
            set_request(resource(entitlement("log", "b"), webhook("")), ""),
            "has space is not an id",
        ))
        .await
        .expect_err("invalid");
    let replaced = refused
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(replaced, "has space is not an id");
    let stream = client
        .watch_provision_policies(with_id(
            pb::WatchProvisionPoliciesRequest::default(),
            "req-watch",
        ))
        .await
        .expect("watch");
    assert_eq!(echoed(&stream), "req-watch");
    drop(stream);
    drop(client);
    let (status, log) = server.terminate();
    assert!(status.success());

    let lines = rpc_lines(&log);
    let line = |id: &str| {
        lines
            .get(id)
            .unwrap_or_else(|| panic!("no line for {id}: {log:#?}"))
    };
    let set = line("req-set-1");
    assert_eq!(
        set["method"],
        "/provision.v1.ProvisionPolicyService/SetProvisionPolicy"
    );
    assert_eq!(set["code"], "OK");
    assert_eq!(set["principal"], "anonymous");
    assert!(set["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(set["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(line(&generated)["code"], "NOT_FOUND");
    assert_eq!(line(&replaced)["code"], "INVALID_ARGUMENT");
    // The client cancels the stream; if SIGTERM overtakes the cancel, the stream ends
    // SHUTTING_DOWN instead. Either way it has its line.
    let watch = &line("req-watch")["code"];
    assert!(watch == "CANCELLED" || watch == "UNAVAILABLE", "{watch}");
    let everything = log.join("\n");
    assert!(
        !everything.contains(SECRET_VALUE),
        "a policy body reached the log"
    );
    assert!(
        !everything.contains("has space is not an id"),
        "an implausible id was logged"
    );
}
