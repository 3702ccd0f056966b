//! Black-box clients in other languages against a real server: grpcurl (Go), Python grpcio and
//! Node @grpc/grpc-js. `make test` installs them into `.venv` and `node_modules` and sets
//! PROVISIOND_REQUIRE_CLIENTS=1, so there a missing client fails; a bare `cargo test` skips them
//! with a printed reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tool, or `None` (and a printed reason) when it is missing and not required.
fn tool(relative: &str) -> Option<PathBuf> {
    let path = repo().join(relative);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("PROVISIOND_REQUIRE_CLIENTS").is_some() {
        panic!("{} is missing; run `make tools`", path.display());
    }
    eprintln!(
        "skipping: {} is missing (run `make test`, which installs it)",
        path.display()
    );
    None
}

fn run(program: &Path, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .expect("run client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        program.display(),
        output.status
    );
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_round_trips() {
    let Some(grpcurl) = tool(".venv/bin/grpcurl") else {
        return;
    };
    let server = TestServer::start().await;
    let address = server.address.to_string();
    let script = repo().join("tests/clients/grpcurl.sh");
    let grpcurl = grpcurl.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        run(
            Path::new("bash"),
            &[script.to_str().unwrap(), &address, &grpcurl],
        )
    })
    .await
    .expect("grpcurl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_round_trips_and_decodes_details() {
    let Some(python) = tool(".venv/bin/python") else {
        return;
    };
    let server = TestServer::start().await;
    let address = server.address.to_string();
    let script = repo().join("tests/clients/python_client.py");
    tokio::task::spawn_blocking(move || {
        run(
            &python,
            &[script.to_str().unwrap(), &address, repo().to_str().unwrap()],
        )
    })
    .await
    .expect("python");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_lists_watches_deletes_and_rolls_back() {
    let Some(python) = tool(".venv/bin/python") else {
        return;
    };
    let server = TestServer::start().await;
    let address = server.address.to_string();
    let script = repo().join("tests/clients/python_lifecycle_client.py");
    tokio::task::spawn_blocking(move || {
        run(
            &python,
            &[script.to_str().unwrap(), &address, repo().to_str().unwrap()],
        )
    })
    .await
    .expect("python lifecycle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_client_round_trips_and_decodes_details() {
    let Some(_) = tool("node_modules/@grpc/grpc-js") else {
        return;
    };
    let server = TestServer::start().await;
    let address = server.address.to_string();
    let script = repo().join("tests/clients/node_client.js");
    tokio::task::spawn_blocking(move || {
        run(
            Path::new("node"),
            &[script.to_str().unwrap(), &address, repo().to_str().unwrap()],
        )
    })
    .await
    .expect("node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_resolves_plans_and_an_old_client_keeps_new_arms() {
    let Some(python) = tool(".venv/bin/python") else {
        return;
    };
    let server = TestServer::start().await;
    let address = server.address.to_string();
    let script = repo().join("tests/clients/python_plans_client.py");
    tokio::task::spawn_blocking(move || {
        run(
            &python,
            &[script.to_str().unwrap(), &address, repo().to_str().unwrap()],
        )
    })
    .await
    .expect("python plans");
}
