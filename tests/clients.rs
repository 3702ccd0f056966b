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

/// An mTLS server with a tokens file: grpcurl and Python grpcio call it as production clients
/// would, every role against every method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_and_python_call_an_mtls_server_with_tokens() {
    use common::certs::Ca;
    use provisiond::server::principal::Role;
    use provisiond::server::roles::METHOD_ROLES;
    use provisiond::server::tokens::line_for;
    let (Some(grpcurl), Some(python)) = (tool(".venv/bin/grpcurl"), tool(".venv/bin/python"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let (cert, key) = server_ca.server().write(dir.path(), "server");
    let (client_cert, client_key) = client_ca.client("ops-laptop").write(dir.path(), "client");
    let ca = server_ca.write(dir.path(), "ca.pem");
    let clients = client_ca.write(dir.path(), "clients.pem");
    let tokens = [
        (
            "reader",
            "auditor",
            Role::Reader,
            "reader-token-0123456789abcdef",
        ),
        (
            "writer",
            "deployer",
            Role::Writer,
            "writer-token-0123456789abcdef",
        ),
        (
            "admin",
            "root",
            Role::Admin,
            "admin-token-0123456789abcdefgh",
        ),
    ];
    let lines: Vec<String> = tokens
        .iter()
        .map(|(_, name, role, token)| line_for(name, *role, token).unwrap())
        .collect();
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, lines.join("\n")).unwrap();
    let server = TestServer::start_with(|config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
        config.tls_client_ca = Some(clients);
        config.auth_tokens_file = Some(tokens_file);
    })
    .await;
    let port = server.address.port().to_string();
    let roles = serde_json::json!({
        "methods": METHOD_ROLES
            .iter()
            .map(|(method, role)| (method.to_string(), serde_json::Value::from(role.to_string())))
            .collect::<serde_json::Map<_, _>>(),
        "tokens": tokens
            .iter()
            .map(|(role, _, _, token)| (role.to_string(), serde_json::Value::from(*token)))
            .collect::<serde_json::Map<_, _>>(),
    })
    .to_string();
    let paths = [&ca, &client_cert, &client_key].map(|p| p.to_str().unwrap().to_owned());
    let (port2, paths2) = (port.clone(), paths.clone());
    let table: String = METHOD_ROLES
        .iter()
        .map(|(method, role)| format!("{method}={role} "))
        .collect();
    tokio::task::spawn_blocking(move || {
        let script = repo().join("tests/clients/grpcurl_security.sh");
        let grpcurl = grpcurl.to_string_lossy().into_owned();
        let args = [
            script.to_str().unwrap(),
            &port2,
            &grpcurl,
            &paths2[0],
            &paths2[1],
            &paths2[2],
            tokens[1].3,
            tokens[0].3,
        ];
        let output = Command::new("bash")
            .args(args)
            .env("ROLE_TABLE", table)
            .env("ADMIN_TOKEN", tokens[2].3)
            .output()
            .expect("run grpcurl");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "grpcurl_security.sh failed:\n{stdout}\n{stderr}"
        );
        println!("{stdout}");
    })
    .await
    .expect("grpcurl");
    tokio::task::spawn_blocking(move || {
        let script = repo().join("tests/clients/python_security_client.py");
        let address = format!("127.0.0.1:{port}");
        let args = [
            script.to_str().unwrap(),
            &address,
            &paths[0],
            &paths[1],
            &paths[2],
            &roles,
        ];
        run(&python, &args);
    })
    .await
    .expect("python");
}
