//! The security parts of the built binary: `hash-token`, SIGHUP reloads, and the refusal to
//! serve unauthenticated off loopback.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{self, Started};
use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use provisiond::server::principal::Role;
use provisiond::server::tokens::line_for;
use tonic::Code;
use tonic::metadata::MetadataValue;

const TOKEN: &str = "a-token-from-openssl-rand-0123456789";

fn hash_token(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisiond"))
        .arg("hash-token")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn hash_token_prints_the_line_and_never_the_token() {
    let output = hash_token(&["--name", "ci", "--role", "writer"], &format!("{TOKEN}\n"));
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        line.trim_end(),
        line_for("ci", Role::Writer, TOKEN).unwrap()
    );
    assert!(!line.contains(TOKEN));
    let weak = hash_token(&["--name", "ci", "--role", "writer"], "short\n");
    assert_eq!(weak.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 16"));
    let bad_role = hash_token(&["--name", "ci", "--role", "owner"], TOKEN);
    assert!(!bad_role.status.success());
}

#[test]
fn off_loopback_without_authentication_it_refuses_to_start_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_provisiond"));
    command
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("PROVISIOND_STORE");
    match process::start_command(command) {
        Started::Exited { status, log } => {
            assert!(!status.success());
            let refusals: Vec<&String> = log
                .iter()
                .filter(|line| line.contains("--allow-unauthenticated"))
                .collect();
            assert_eq!(refusals.len(), 1, "{log:#?}");
            assert!(refusals[0].contains("0.0.0.0"), "{log:#?}");
        }
        Started::Listening(process) => {
            process.crash();
            panic!("served unauthenticated on 0.0.0.0");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let other = "another-token-from-openssl-0123456789";
    std::fs::write(&tokens, line_for("ci", Role::Reader, TOKEN).unwrap()).unwrap();
    let data = dir.path().join("data");
    // Change detection is off in effect (an hour): only the signal can reload.
    let started = process::start_with_args(
        &data,
        &[
            "--auth-tokens-file",
            tokens.to_str().unwrap(),
            "--reload-interval",
            "3600s",
        ],
    );
    let Started::Listening(server) = started else {
        panic!("did not start");
    };
    let mut client = ProvisionPolicyServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let list = |token: &'static str| {
        let mut request = tonic::Request::new(pb::ListProvisionPoliciesRequest::default());
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
        );
        request
    };
    client.list_provision_policies(list(TOKEN)).await.unwrap();
    std::fs::write(&tokens, line_for("ci2", Role::Reader, other).unwrap()).unwrap();
    server.signal("HUP");
    let mut reloaded = false;
    for _ in 0..100 {
        match client.list_provision_policies(list(TOKEN)).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                reloaded = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(reloaded, "SIGHUP did not reload the tokens");
    client.list_provision_policies(list(other)).await.unwrap();
    let (status, _) = server.terminate();
    assert!(status.success());
}
