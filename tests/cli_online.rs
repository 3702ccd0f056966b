//! provisionctl against a real server on port 0: diff, apply (files and plans), get, history,
//! rollback, delete, bindings, watch, contexts, tokens, and the exit-code matrix. Each test runs
//! the built binary with `--server http://ADDRESS`, HOME and XDG_CONFIG_HOME in a temp dir.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::TestServer;
use provisiond::pb;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_provisionctl");

/// The binary with a clean environment (no PROVISIONCTL_*, config in `home`).
fn command(home: &Path) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("PROVISIONCTL_") {
            command.env_remove(key);
        }
    }
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

struct Ctl {
    server: String,
    home: tempfile::TempDir,
}

impl Ctl {
    fn new(server: &TestServer) -> Ctl {
        Ctl {
            server: format!("http://{}", server.address),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }

    /// Runs `provisionctl --server … ARGS` off the runtime's threads.
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = command(self.dir());
        command.arg("--server").arg(&self.server).args(args);
        self.output(command).await
    }

    async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = command(self.dir());
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        self.output(command).await
    }

    async fn output(&self, mut command: Command) -> Output {
        tokio::task::spawn_blocking(move || command.output().expect("provisionctl runs"))
            .await
            .unwrap()
    }

    /// Writes a policy file under the temp dir and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn expect(output: &Output, want: i32) {
    assert_eq!(
        code(output),
        want,
        "exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn webhook_file(app: &str, entitlement: &str, webhook: &str) -> String {
    format!(
        r#"{{
  "policy": {{
    "entitlement": {{"appId": "{app}", "entitlementId": "{entitlement}"}},
    "provisionPolicy": {{"webhook": {{"webhookId": "{webhook}"}}}}
  }}
}}
"#
    )
}

async fn current(
    server: &TestServer,
    app: &str,
    entitlement: &str,
) -> Option<pb::EntitlementProvisionPolicy> {
    let mut client = server.client.clone();
    match client
        .get_provision_policy(common::get_request(
            common::entitlement(app, entitlement),
            0,
        ))
        .await
    {
        Ok(response) => response.into_inner().policy,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("get: {status}"),
    }
}

async fn revision(server: &TestServer, app: &str, entitlement: &str) -> i64 {
    current(server, app, entitlement)
        .await
        .map(|policy| policy.revision)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_of_the_same_files_is_a_noop() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    ctl.file("policies/a.json", &webhook_file("github", "admins", "wh-1"));
    ctl.file(
        "policies/b.json",
        &webhook_file("github", "members", "wh-2"),
    );
    let dir = ctl.dir().join("policies");
    let dir = dir.to_str().unwrap();

    let first = ctl.run(&["apply", dir, "--yes"]).await;
    expect(&first, 0);
    assert!(
        stdout(&first).contains("created github/admins"),
        "{}",
        stdout(&first)
    );
    assert_eq!(revision(&server, "github", "admins").await, 1);
    assert_eq!(revision(&server, "github", "members").await, 1);

    let second = ctl.run(&["apply", dir, "--yes", "-o", "json"]).await;
    expect(&second, 0);
    let results: Value = serde_json::from_slice(&second.stdout).unwrap();
    for result in results["results"].as_array().unwrap() {
        assert_eq!(result["action"], "noop", "{results}");
        assert_eq!(result["written"], false);
    }
    assert_eq!(revision(&server, "github", "admins").await, 1);
    assert_eq!(revision(&server, "github", "members").await, 1);

    // Without a terminal and without --yes nothing is written (usage, 64), only when changes
    // are pending.
    ctl.file("policies/a.json", &webhook_file("github", "admins", "wh-9"));
    let unconfirmed = ctl.run(&["apply", dir]).await;
    expect(&unconfirmed, 64);
    assert!(
        stderr(&unconfirmed).contains("--yes"),
        "{}",
        stderr(&unconfirmed)
    );
    assert_eq!(revision(&server, "github", "admins").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_between_diff_and_apply_plan_makes_the_plan_stale() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let a = ctl.file("a.json", &webhook_file("github", "admins", "wh-1"));
    expect(&ctl.run(&["apply", &a, "--yes"]).await, 0);

    ctl.file("a.json", &webhook_file("github", "admins", "wh-2"));
    let b = ctl.file("b.json", &webhook_file("github", "members", "wh-3"));
    let plan = ctl.dir().join("plan.json");
    let plan = plan.to_str().unwrap();
    let diff = ctl.run(&["diff", &a, &b, "--out", plan]).await;
    expect(&diff, 0);
    assert!(
        stdout(&diff).contains("-        \"webhookId\": \"wh-1\""),
        "{}",
        stdout(&diff)
    );
    assert!(
        stdout(&diff).contains("+        \"webhookId\": \"wh-2\""),
        "{}",
        stdout(&diff)
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap();
    assert_eq!(written["version"], 1);
    let entries = written["entries"].as_array().unwrap();
    assert_eq!(entries[0]["entitlement"], "github/admins");
    assert_eq!(entries[0]["action"], "update");
    assert_eq!(entries[0]["etag"], "\"1\"");
    assert_eq!(entries[0]["revision"], 1);
    assert_eq!(entries[0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(entries[1]["action"], "create");

    // Someone else writes github/admins in between.
    common::set_webhook(
        &mut server.client.clone(),
        &common::entitlement("github", "admins"),
        "wh-other",
    )
    .await;
    assert_eq!(revision(&server, "github", "admins").await, 2);

    let apply = ctl.run(&["apply", "--plan", plan, "--yes"]).await;
    expect(&apply, 3);
    assert!(
        stderr(&apply).contains("plan is stale"),
        "{}",
        stderr(&apply)
    );
    // Nothing written: neither the update nor the create of the other entry.
    assert_eq!(revision(&server, "github", "admins").await, 2);
    assert!(current(&server, "github", "members").await.is_none());

    // A fresh plan applies exactly what it holds, even after the files changed again.
    expect(&ctl.run(&["diff", &a, &b, "--out", plan]).await, 0);
    ctl.file(
        "a.json",
        &webhook_file("github", "admins", "wh-not-planned"),
    );
    expect(&ctl.run(&["apply", "--plan", plan, "--yes"]).await, 0);
    let admins = current(&server, "github", "admins").await.unwrap();
    assert_eq!(admins.revision, 3);
    assert_eq!(
        admins.provision_policy,
        Some(common::webhook("wh-2")),
        "the planned request, not the file's later text"
    );
    assert_eq!(revision(&server, "github", "members").await, 1);

    // The same plan twice: its etags are old now, so it is stale.
    expect(&ctl.run(&["apply", "--plan", plan, "--yes"]).await, 3);
    assert_eq!(revision(&server, "github", "admins").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_json_then_apply_is_a_noop() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let mut names = Vec::new();
    for example in [
        "01-github-org-members-connector-default.json",
        "04-salesforce-admin-manual-users.json",
        "08-pagerduty-responder-manual-expression.json",
    ] {
        let path = examples.join(example);
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let entitlement = &value["policy"]["entitlement"];
        names.push(format!(
            "{}/{}",
            entitlement["appId"].as_str().unwrap(),
            entitlement["entitlementId"].as_str().unwrap()
        ));
        expect(
            &ctl.run(&["apply", path.to_str().unwrap(), "--yes"]).await,
            0,
        );
    }
    for name in &names {
        let get = ctl.run(&["get", name, "-o", "json"]).await;
        expect(&get, 0);
        let text = stdout(&get);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(value["policy"].get("etag").is_none(), "{text}");
        assert!(value["policy"].get("revision").is_none(), "{text}");
        assert!(value["policy"].get("updateTime").is_none(), "{text}");
        let file = ctl.file("got.json", &text);
        let (app, entitlement) = name.split_once('/').unwrap();
        let before = revision(&server, app, entitlement).await;
        let apply = ctl.run(&["apply", &file, "--yes"]).await;
        expect(&apply, 0);
        assert!(stdout(&apply).contains("unchanged"), "{}", stdout(&apply));
        assert_eq!(revision(&server, app, entitlement).await, before);
        let diff = ctl.run(&["diff", &file, "--detailed-exitcode"]).await;
        expect(&diff, 0);
    }
    // Text output: the header of output-only fields, then the same file.
    let text = ctl.run(&["get", &names[0]]).await;
    expect(&text, 0);
    assert!(
        stdout(&text).contains("# revision:    1"),
        "{}",
        stdout(&text)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_reports_violations_at_their_lines() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let good = ctl.file("good.json", &webhook_file("github", "admins", "wh-1"));
    let dry = ctl.run(&["apply", &good, "--dry-run"]).await;
    expect(&dry, 0);
    assert!(
        stdout(&dry).contains("would create github/admins"),
        "{}",
        stdout(&dry)
    );
    assert!(current(&server, "github", "admins").await.is_none());

    let bad = ctl.file("bad.json", &webhook_file("github", "admins", "has a space"));
    let refused = ctl.run(&["apply", &bad, "--dry-run"]).await;
    expect(&refused, 1);
    let out = stdout(&refused);
    assert!(out.contains("INVALID_ID"), "{out}");
    assert!(out.contains(":4:"), "the line of webhookId: {out}");
    let json = ctl.run(&["apply", &bad, "--yes", "-o", "json"]).await;
    expect(&json, 1);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(report.to_string().contains("webhook_id"), "{report}");
    assert!(current(&server, "github", "admins").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_detailed_exitcode_is_0_then_2_after_an_edit() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let a = ctl.file("a.json", &webhook_file("github", "admins", "wh-1"));
    let create = ctl.run(&["diff", &a, "--detailed-exitcode"]).await;
    expect(&create, 2);
    assert!(
        stdout(&create).contains("create    github/admins"),
        "{}",
        stdout(&create)
    );
    expect(&ctl.run(&["apply", &a, "--yes"]).await, 0);
    let none = ctl.run(&["diff", &a, "--detailed-exitcode"]).await;
    expect(&none, 0);
    assert!(
        stdout(&none).contains("0 to create, 0 to update, 1 unchanged"),
        "{}",
        stdout(&none)
    );
    ctl.file("a.json", &webhook_file("github", "admins", "wh-2"));
    let edited = ctl.run(&["diff", &a, "--detailed-exitcode"]).await;
    expect(&edited, 2);
    assert!(
        stdout(&edited).contains("update    github/admins  (revision 1, etag \"1\""),
        "{}",
        stdout(&edited)
    );
    // Without the flag, pending changes are still 0.
    expect(&ctl.run(&["diff", &a]).await, 0);
    let json = ctl.run(&["diff", &a, "-o", "json"]).await;
    let plan: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(plan["entries"][0]["action"], "update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rollback_and_delete_round_trip() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let a = ctl.file("a.json", &webhook_file("github", "admins", "wh-1"));
    expect(&ctl.run(&["apply", &a, "--yes"]).await, 0);
    let v1 = stdout(&ctl.run(&["get", "github/admins", "-o", "json"]).await);
    ctl.file("a.json", &webhook_file("github", "admins", "wh-2"));
    expect(&ctl.run(&["apply", &a, "--yes"]).await, 0);

    let history = ctl.run(&["history", "github/admins", "-o", "json"]).await;
    expect(&history, 0);
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let revisions: Vec<String> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["revision"].to_string())
        .collect();
    assert_eq!(revisions, ["\"2\"", "\"1\""], "newest first: {history}");
    let text = ctl.run(&["history", "github/admins"]).await;
    assert!(stdout(&text).starts_with("REVISION"), "{}", stdout(&text));

    // Revision 1 is still readable.
    let old = ctl
        .run(&["get", "github/admins", "--revision", "1", "-o", "json"])
        .await;
    assert_eq!(stdout(&old), v1);

    let unconfirmed = ctl.run(&["rollback", "github/admins", "--to", "1"]).await;
    expect(&unconfirmed, 64);
    let rollback = ctl
        .run(&["rollback", "github/admins", "--to", "1", "--yes"])
        .await;
    expect(&rollback, 0);
    assert!(
        stdout(&rollback).contains("now revision 3"),
        "{}",
        stdout(&rollback)
    );
    assert_eq!(
        stdout(&ctl.run(&["get", "github/admins", "-o", "json"]).await),
        v1
    );
    expect(
        &ctl.run(&["rollback", "github/admins", "--to", "9", "--yes"])
            .await,
        5,
    );

    let delete = ctl.run(&["delete", "github/admins", "--yes"]).await;
    expect(&delete, 0);
    assert!(
        stdout(&delete).contains("revision 4"),
        "{}",
        stdout(&delete)
    );
    expect(&ctl.run(&["get", "github/admins"]).await, 5);
    expect(&ctl.run(&["delete", "github/admins", "--yes"]).await, 5);
    let history = ctl
        .run(&["history", "github/admins", "--limit", "2", "-o", "json"])
        .await;
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(history["revisions"][0]["deleted"], true);
    // Rollback undeletes.
    expect(
        &ctl.run(&["rollback", "github/admins", "--to", "2", "--yes"])
            .await,
        0,
    );
    assert_eq!(revision(&server, "github", "admins").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_round_trip() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let flags = ["--source", "okta/admins", "--destination", "github/admins"];
    let create = ctl
        .run(&[&["bindings", "create"][..], &flags].concat())
        .await;
    expect(&create, 0);
    assert!(
        stdout(&create).contains("okta/admins -> github/admins"),
        "{}",
        stdout(&create)
    );
    expect(
        &ctl.run(&[&["bindings", "create"][..], &flags].concat())
            .await,
        3,
    );

    let list = ctl.run(&["bindings", "list"]).await;
    expect(&list, 0);
    assert_eq!(stdout(&list), "okta/admins -> github/admins\n");
    let json = ctl
        .run(&["bindings", "list", "--source", "okta/admins", "-o", "json"])
        .await;
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        json["bindings"][0]["destination"]["entitlementId"],
        "admins"
    );
    let other = ctl
        .run(&["bindings", "list", "--destination", "okta/admins"])
        .await;
    assert_eq!(stdout(&other), "");

    expect(
        &ctl.run(&[&["bindings", "delete"][..], &flags].concat())
            .await,
        0,
    );
    assert_eq!(stdout(&ctl.run(&["bindings", "list"]).await), "");
    expect(
        &ctl.run(&[&["bindings", "delete"][..], &flags].concat())
            .await,
        5,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_gives_4() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let a = ctl.file("a.json", &webhook_file("github", "admins", "wh-1"));
    server.stop().await;
    for args in [
        vec!["get", "github/admins"],
        vec!["apply", &a, "--yes"],
        vec!["diff", &a],
        vec!["watch"],
        vec!["bindings", "list"],
    ] {
        let output = ctl.run(&[&args[..], &["--timeout", "2s"]].concat()).await;
        expect(&output, 4);
        assert!(
            stderr(&output).contains("cannot connect"),
            "{}",
            stderr(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_token_gets_4_on_apply() {
    use provisiond::server::principal::Role;
    use provisiond::server::tokens::line_for;
    const READER: &str = "reader-token-0123456789abcdef";
    const WRITER: &str = "writer-token-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "{}\n{}\n",
            line_for("reports", Role::Reader, READER).unwrap(),
            line_for("ci", Role::Writer, WRITER).unwrap()
        ),
    )
    .unwrap();
    let server = TestServer::start_with(|config| config.auth_tokens_file = Some(tokens)).await;
    let ctl = Ctl::new(&server);
    let a = ctl.file("a.json", &webhook_file("github", "admins", "wh-1"));
    let reader = ctl.file("reader.token", &format!("{READER}\n"));

    let refused = ctl
        .run(&["--token-file", &reader, "apply", &a, "--yes"])
        .await;
    expect(&refused, 4);
    assert!(
        stderr(&refused).contains("PermissionDenied"),
        "{}",
        stderr(&refused)
    );
    assert!(!stderr(&refused).contains(READER), "never print the token");
    // No token at all: UNAUTHENTICATED, also 4.
    expect(&ctl.run(&["get", "github/admins"]).await, 4);
    // The reader may read: NOT_FOUND is 5.
    expect(
        &ctl.run(&["--token-file", &reader, "get", "github/admins"])
            .await,
        5,
    );
    // PROVISIONCTL_TOKEN holds a token itself.
    let server_flag = ctl.server.clone();
    let written = ctl
        .run_env(
            &["--server", &server_flag, "apply", &a, "--yes"],
            &[("PROVISIONCTL_TOKEN", WRITER)],
        )
        .await;
    expect(&written, 0);
    let history = ctl
        .run_env(
            &[
                "--server",
                &server_flag,
                "history",
                "github/admins",
                "-o",
                "json",
            ],
            &[("PROVISIONCTL_TOKEN", READER)],
        )
        .await;
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history["revisions"][0]["actor"], "ci");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_matrix() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let good = ctl.file("good.json", &webhook_file("github", "admins", "wh-1"));
    let edited = ctl.file("edited.json", &webhook_file("github", "admins", "wh-2"));
    let bad = ctl.file("bad.json", &webhook_file("github", "admins", "bad id"));
    let broken = ctl.file("broken.json", "{\"policy\": {\"nope\": 1}}");
    expect(&ctl.run(&["apply", &good, "--yes"]).await, 0);
    let plan = ctl.dir().join("plan.json");
    let plan = plan.to_str().unwrap();
    expect(&ctl.run(&["diff", &edited, "--out", plan]).await, 0);
    common::set_webhook(
        &mut server.client.clone(),
        &common::entitlement("github", "admins"),
        "wh-3",
    )
    .await;

    let stopped = TestServer::start().await;
    let stopped_address = format!("http://{}", stopped.address);
    stopped.stop().await;

    let cases: Vec<(i32, Vec<&str>)> = vec![
        (0, vec!["get", "github/admins"]),
        (0, vec!["diff", &good]),
        (1, vec!["apply", &bad, "--yes"]),
        (1, vec!["apply", &broken, "--yes"]),
        (1, vec!["diff", "/nonexistent/policy.json"]),
        (2, vec!["diff", &edited, "--detailed-exitcode"]),
        (3, vec!["apply", "--plan", plan, "--yes"]),
        (4, vec!["get", "github/admins", "--server", "STOPPED"]),
        (5, vec!["get", "github/nobody"]),
        (5, vec!["history", "github/nobody"]),
        (64, vec!["get", "no-slash"]),
        (64, vec!["frobnicate"]),
        (64, vec!["apply", "--plan", plan, &good]),
        (64, vec!["diff"]),
    ];
    for (want, args) in cases {
        let mut args: Vec<&str> = args;
        if args.last() == Some(&"STOPPED") {
            args.pop();
            args.push(&stopped_address);
        } else {
            args.splice(0..0, ["--server", ctl.server.as_str()]);
        }
        let output = ctl.run_env(&args, &[]).await;
        assert_eq!(
            code(&output),
            want,
            "provisionctl {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            stdout(&output),
            stderr(&output)
        );
    }
    assert_eq!(revision(&server, "github", "admins").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_is_0_and_completion_prints_a_script() {
    let home = tempfile::tempdir().unwrap();
    let help = command(home.path()).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("apply"), "{}", stdout(&help));
    let sub = command(home.path())
        .args(["apply", "--help"])
        .output()
        .unwrap();
    assert_eq!(sub.status.code(), Some(0));
    let completion = command(home.path())
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert_eq!(completion.status.code(), Some(0));
    assert!(
        stdout(&completion).contains("provisionctl"),
        "{}",
        stdout(&completion)
    );
    let no_server = command(home.path()).args(["get", "a/b"]).output().unwrap();
    assert_eq!(no_server.status.code(), Some(64), "{}", stderr(&no_server));
}

/// Reads `count` lines of a running `watch`, then kills it.
async fn watch_lines(ctl: &Ctl, args: &[&str], count: usize) -> Vec<String> {
    let mut command = command(ctl.dir());
    command
        .arg("--server")
        .arg(&ctl.server)
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let task = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("watch starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            lines.push(line.unwrap());
            if lines.len() == count {
                break;
            }
        }
        child.kill().ok();
        child.wait().ok();
        lines
    });
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the watch printed its lines in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_cursor_resumes() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let mut client = server.client.clone();
    let first = common::set_webhook(&mut client, &common::entitlement("github", "a"), "wh-1").await;
    common::set_webhook(&mut client, &common::entitlement("github", "b"), "wh-2").await;
    common::set_webhook(&mut client, &common::entitlement("github", "c"), "wh-3").await;

    let lines = watch_lines(&ctl, &["--from", &first.change_cursor, "-o", "json"], 2).await;
    let changes: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(changes[0]["entitlement"]["entitlementId"], "b", "{lines:?}");
    assert_eq!(changes[1]["entitlement"]["entitlementId"], "c", "{lines:?}");
    assert_eq!(changes[0]["kind"], "put");
    assert_eq!(
        changes[0]["policy"]["provisionPolicy"]["webhook"]["webhookId"],
        "wh-2"
    );
    let after_b = changes[0]["cursor"].as_str().unwrap().to_owned();

    // Resume after b: c, then a live write, exactly once each; text lines carry the cursor.
    let live = {
        let mut client = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            common::set_webhook(&mut client, &common::entitlement("github", "d"), "wh-4").await
        })
    };
    let lines = watch_lines(&ctl, &["--from", &after_b], 2).await;
    let live = live.await.unwrap();
    assert!(
        lines[0].ends_with("put github/c revision 1 by anonymous"),
        "{lines:?}"
    );
    assert!(lines[1].starts_with(&live.change_cursor), "{lines:?}");
    assert!(lines[1].contains("put github/d revision 1"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_fill_in_what_flags_and_env_leave_unset() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let dead = TestServer::start().await;
    let dead_address = format!("http://{}", dead.address);
    dead.stop().await;
    let good = ctl.server.clone();
    let token = ctl.file("t.token", "some-token-0123456789\n");

    let set = ctl
        .run_env(
            &[
                "context",
                "set",
                "local",
                "--server",
                &good,
                "--token-file",
                &token,
            ],
            &[],
        )
        .await;
    expect(&set, 0);
    expect(
        &ctl.run_env(
            &["context", "set", "broken", "--server", &dead_address],
            &[],
        )
        .await,
        0,
    );
    let config_path = ctl.dir().join("config/provisionctl/config.json");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(
        config["current"], "local",
        "the first context set becomes current"
    );
    assert_eq!(config["contexts"]["local"]["server"], good.as_str());
    assert!(
        !std::fs::read_to_string(&config_path)
            .unwrap()
            .contains("some-token"),
        "a context holds the token file's path, never the token"
    );
    let list = ctl.run_env(&["context", "list"], &[]).await;
    assert!(stdout(&list).contains("* local"), "{}", stdout(&list));
    assert!(stdout(&list).contains("  broken"), "{}", stdout(&list));

    // The current context: NOT_FOUND from the right server is 5.
    expect(&ctl.run_env(&["get", "github/x"], &[]).await, 5);
    // --context and PROVISIONCTL_CONTEXT select another one.
    expect(
        &ctl.run_env(
            &["--context", "broken", "get", "github/x", "--timeout", "2s"],
            &[],
        )
        .await,
        4,
    );
    expect(
        &ctl.run_env(
            &["get", "github/x", "--timeout", "2s"],
            &[("PROVISIONCTL_CONTEXT", "broken")],
        )
        .await,
        4,
    );
    // Env beats the context, the flag beats env.
    expect(
        &ctl.run_env(
            &["--context", "broken", "get", "github/x"],
            &[("PROVISIONCTL_SERVER", &good)],
        )
        .await,
        5,
    );
    expect(
        &ctl.run_env(
            &[
                "--server",
                &dead_address,
                "get",
                "github/x",
                "--timeout",
                "2s",
            ],
            &[("PROVISIONCTL_SERVER", &good)],
        )
        .await,
        4,
    );
    // `use` switches; an unknown context is a usage error.
    expect(&ctl.run_env(&["context", "use", "broken"], &[]).await, 0);
    expect(
        &ctl.run_env(&["get", "github/x", "--timeout", "2s"], &[])
            .await,
        4,
    );
    expect(&ctl.run_env(&["context", "use", "nope"], &[]).await, 64);
    expect(
        &ctl.run_env(&["--context", "nope", "get", "github/x"], &[])
            .await,
        64,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_goes_online_with_the_current_context() {
    let server = TestServer::start().await;
    let ctl = Ctl::new(&server);
    let good = ctl.server.clone();
    expect(
        &ctl.run_env(&["context", "set", "local", "--server", &good], &[])
            .await,
        0,
    );
    // A delegation to an entitlement the server does not have: offline it passes, online not.
    let file = ctl.file(
        "delegated.json",
        r#"{"policy": {"entitlement": {"appId": "github", "entitlementId": "admins"},
  "provisionPolicy": {"delegated": {"appId": "okta", "entitlementId": "nobody"}}}}"#,
    );
    let online = ctl.run_env(&["validate", &file], &[]).await;
    expect(&online, 1);
    let home = tempfile::tempdir().unwrap();
    let offline = command(home.path())
        .args(["validate", &file])
        .output()
        .unwrap();
    assert_eq!(offline.status.code(), Some(0), "{}", stdout(&offline));
}
