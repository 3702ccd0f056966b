//! A provisiond served in-process through `server::serve` on 127.0.0.1:0, with the generated client.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod certs;
pub mod postgres;
pub mod process;

use std::net::SocketAddr;

use provisiond::config::Config;
use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub type Client = ProvisionPolicyServiceClient<Channel>;

pub struct TestServer {
    pub address: SocketAddr,
    pub client: Client,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), provisiond::server::ServeError>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::with_data_dir(data_dir.path());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            provisiond::server::serve(listener, &config, async {
                let _ = stopped.await;
            })
            .await
        });
        // Lazily: a server with TLS takes no plaintext client (its tests make their own).
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect_lazy();
        Self {
            address,
            client: ProvisionPolicyServiceClient::new(channel),
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Stops the server and waits until it has drained and closed its store.
    pub async fn stop(mut self) {
        self.stop.take().expect("running").send(()).ok();
        let task = self.task.take().expect("running");
        task.await.expect("serve task").expect("serve");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn entitlement(app_id: &str, entitlement_id: &str) -> pb::EntitlementRef {
    pb::EntitlementRef {
        app_id: app_id.to_owned(),
        entitlement_id: entitlement_id.to_owned(),
    }
}

pub fn webhook(id: &str) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Webhook(pb::WebhookProvision {
            webhook_id: id.to_owned(),
        })),
    }
}

pub fn multi_step(steps: Vec<pb::ProvisionPolicy>) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::MultiStep(pb::MultiStep {
            provision_steps: steps,
        })),
    }
}

pub fn manual(user_ids: &[&str]) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Manual(pb::ManualProvision {
            instructions: "Add the user to the team in the admin console.".to_owned(),
            user_ids: user_ids.iter().map(|s| s.to_string()).collect(),
            assignee: None,
        })),
    }
}

pub fn resource(
    entitlement: pb::EntitlementRef,
    policy: pb::ProvisionPolicy,
) -> pb::EntitlementProvisionPolicy {
    pb::EntitlementProvisionPolicy {
        entitlement: Some(entitlement),
        provision_policy: Some(policy),
        ..Default::default()
    }
}

pub fn set_request(
    resource: pb::EntitlementProvisionPolicy,
    etag: &str,
) -> pb::SetProvisionPolicyRequest {
    pb::SetProvisionPolicyRequest {
        policy: Some(resource),
        etag: etag.to_owned(),
        validate_only: false,
        create_only: false,
        change_cause: String::new(),
    }
}

pub fn get_request(
    entitlement: pb::EntitlementRef,
    revision: i64,
) -> pb::GetProvisionPolicyRequest {
    pb::GetProvisionPolicyRequest {
        entitlement: Some(entitlement),
        revision,
        consistency: None,
    }
}

/// The `ErrorInfo.reason` of an error, which every error carries with the domain `provisiond`.
pub fn error_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let info = details.error_info().expect("every error carries ErrorInfo");
    assert_eq!(info.domain, "provisiond");
    info.reason.clone()
}

/// The (field, reason) pairs of the error's BadRequest detail.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("BadRequest detail");
    bad_request
        .field_violations
        .iter()
        .map(|v| (v.field.clone(), v.reason.clone()))
        .collect()
}

/// Sets a webhook policy `hook` on `entitlement`; the write must succeed.
pub async fn set_webhook(
    client: &mut Client,
    entitlement: &pb::EntitlementRef,
    hook: &str,
) -> pb::SetProvisionPolicyResponse {
    client
        .set_provision_policy(set_request(
            resource(entitlement.clone(), webhook(hook)),
            "",
        ))
        .await
        .expect("set")
        .into_inner()
}

pub fn delete_request(entitlement: &pb::EntitlementRef) -> pb::DeleteProvisionPolicyRequest {
    pb::DeleteProvisionPolicyRequest {
        entitlement: Some(entitlement.clone()),
        ..Default::default()
    }
}
