//! provisionctl validate: the binary on the examples and on broken fixtures (tests/cli/bad/),
//! every line and column found by searching the fixture's text; whole-output snapshots of the
//! `github`, `json`, `sarif` and `junit` formats (tests/cli/snapshots/, rewritten with
//! `UPDATE_SNAPSHOTS=1`); the SARIF and JUnit documents parse; GitHub escaping; and against a
//! real server on port 0, a dangling delegation that passes offline and fails with --server.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use provisiond::cli::files::PolicyFile;
use provisiond::cli::locate::Location;
use provisiond::cli::output::{self, Finding, Severity};
use provisiond::cli::{Color, Format};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_provisionctl");

fn provisionctl(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PROVISIONCTL_SERVER")
        .env_remove("PROVISIONCTL_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .expect("provisionctl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

/// The 1-based line and char column of the `nth` (from 0) occurrence of `needle` in `text`.
fn position(text: &str, needle: &str, nth: usize) -> (u64, u64) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in the fixture"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line as u64, column as u64)
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("fixture")
}

#[test]
fn the_examples_validate_offline() {
    let output = provisionctl(&["validate", "examples/policies/"]);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    assert!(stdout(&output).ends_with("15 files, 15 valid, 0 errors, 0 warnings\n"));
    // The one delegating example gets the notice that graph rules need a server, once.
    assert_eq!(
        stdout(&output).matches("GRAPH_RULES_NOT_CHECKED").count(),
        1
    );
}

/// (fixture, field, reason, the text the finding must start at, which occurrence of it).
const EXPECTED: &[(&str, &str, &str, &str, usize)] = &[
    (
        "tests/cli/bad/webhook.json",
        "policy.provision_policy.multi_step.provision_steps[2].webhook.webhook_id",
        "INVALID_ID",
        "\"not an id!\"",
        0,
    ),
    // snake_case keys; a missing field points at its parent's key.
    (
        "tests/cli/bad/snake_case.json",
        "policy.entitlement.entitlement_id",
        "INVALID_ID",
        "\"bad id\"",
        0,
    ),
    (
        "tests/cli/bad/snake_case.json",
        "policy.provision_policy.multi_step.provision_steps[1].webhook.webhook_id",
        "REQUIRED",
        "\"webhook\"",
        0,
    ),
    // A map key with a space, after a multi-byte character on the same line.
    (
        "tests/cli/bad/config.json",
        "policy.provision_policy.connector.account.config[\"home dir\"]",
        "INVALID_CEL",
        "\"subject.((\"",
        0,
    ),
    (
        "tests/cli/bad/unknown_key.json",
        "",
        "UNKNOWN_FIELD",
        "\"retries\"",
        0,
    ),
    (
        "tests/cli/bad/two_arms.json",
        "",
        "CONFLICTING_FIELDS",
        "\"connector\"",
        0,
    ),
    (
        "tests/cli/bad/trailing_comma.json",
        "",
        "INVALID_JSON",
        "}\n",
        0,
    ),
];

#[test]
fn broken_fixtures_fail_at_their_lines_and_columns() {
    let mut files: Vec<&str> = EXPECTED.iter().map(|(file, ..)| *file).collect();
    files.dedup();
    let mut args = vec!["validate", "-o", "json"];
    args.extend(&files);
    let output = provisionctl(&args);
    assert_eq!(code(&output), 1);
    let report: Value = serde_json::from_str(&stdout(&output)).expect("one JSON document");
    let mut found = Vec::new();
    for file in report["files"].as_array().unwrap() {
        for violation in file["violations"].as_array().unwrap() {
            found.push((
                file["path"].as_str().unwrap().to_owned(),
                violation["field"].as_str().unwrap().to_owned(),
                violation["reason"].as_str().unwrap().to_owned(),
                violation["line"].as_u64().unwrap(),
                violation["column"].as_u64().unwrap(),
            ));
        }
    }
    let expected: Vec<_> = EXPECTED
        .iter()
        .map(|(file, field, reason, needle, nth)| {
            let (line, column) = position(&fixture(file), needle, *nth);
            (
                file.to_string(),
                field.to_string(),
                reason.to_string(),
                line,
                column,
            )
        })
        .collect();
    assert_eq!(found, expected);
    // The multi-byte characters before it count one column each: not the byte column.
    let text = fixture("tests/cli/bad/config.json");
    let line = text.lines().find(|line| line.contains("home dir")).unwrap();
    let byte_column = line.find("\"subject.((\"").unwrap() as u64 + 1;
    let char_column = expected[3].4;
    assert_eq!(byte_column - char_column, "ë🙂".len() as u64 - 2);
}

#[test]
fn text_output_shows_the_line_with_a_caret_and_a_summary() {
    let output = provisionctl(&["validate", "tests/cli/bad/webhook.json"]);
    assert_eq!(code(&output), 1);
    let text = stdout(&output);
    let (line, column) = position(&fixture("tests/cli/bad/webhook.json"), "\"not an id!\"", 0);
    assert!(
        text.starts_with(&format!(
            "tests/cli/bad/webhook.json:{line}:{column}: error[INVALID_ID] "
        )),
        "{text}"
    );
    let caret = text.lines().nth(2).unwrap();
    assert_eq!(
        caret.find('^').unwrap() - caret.find('|').unwrap() - 1,
        column as usize
    );
    assert!(caret.ends_with(&"^".repeat("\"not an id!\"".len())));
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    assert!(text.ends_with("1 file, 0 valid, 1 error, 0 warnings\n"));
}

/// The files of the snapshots: errors of both key styles, a parse error and a valid file.
const SNAPSHOT_FILES: &[&str] = &[
    "tests/cli/bad/snake_case.json",
    "tests/cli/bad/config.json",
    "tests/cli/bad/unknown_key.json",
    "examples/policies/12-github-contractors-delegated-implicit.json",
];

fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no snapshot {path:?}: run with UPDATE_SNAPSHOTS=1"));
    assert_eq!(
        actual, expected,
        "{name} changed; UPDATE_SNAPSHOTS=1 rewrites it"
    );
}

fn validate_as(format: &str) -> String {
    let mut args = vec!["validate", "-o", format];
    args.extend(SNAPSHOT_FILES);
    let output = provisionctl(&args);
    assert_eq!(code(&output), 1);
    stdout(&output)
}

#[test]
fn github_output_snapshot() {
    let out = validate_as("github");
    assert_eq!(
        out.matches("::group::").count(),
        out.matches("::endgroup::").count()
    );
    snapshot("validate.github.txt", &out);
}

#[test]
fn json_output_snapshot() {
    let out = validate_as("json");
    let report: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(report["version"], 1);
    assert_eq!(report["summary"]["errors"], 4);
    snapshot("validate.json", &out);
}

#[test]
fn sarif_output_snapshot_is_a_sarif_2_1_0_log() {
    let out = validate_as("sarif");
    let log: Value = serde_json::from_str(&out).expect("SARIF is JSON");
    assert_eq!(log["version"], "2.1.0");
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for result in results {
        assert!(result["ruleId"].as_str().is_some_and(|id| !id.is_empty()));
        let region = &result["locations"][0]["physicalLocation"]["region"];
        assert!(region["startLine"].as_u64().unwrap() >= 1);
        assert!(region["startColumn"].as_u64().unwrap() >= 1);
    }
    // UTF-16 columns: "ë" is one unit, "🙂" two; the char column is one less.
    let cel = results
        .iter()
        .find(|result| result["ruleId"] == "INVALID_CEL")
        .unwrap();
    let (_, char_column) = position(&fixture("tests/cli/bad/config.json"), "\"subject.((\"", 0);
    assert_eq!(
        cel["locations"][0]["physicalLocation"]["region"]["startColumn"]
            .as_u64()
            .unwrap(),
        char_column + 1
    );
    snapshot("validate.sarif.json", &out);
}

#[test]
fn junit_output_snapshot_is_valid_xml() {
    let out = validate_as("junit");
    let mut reader = quick_xml::Reader::from_str(&out);
    let (mut testcases, mut failures) = (0, 0);
    loop {
        match reader.read_event().expect("JUnit parses as XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(tag) | quick_xml::events::Event::Empty(tag) => {
                match tag.name().into_inner() {
                    "testcase" => testcases += 1,
                    "failure" => failures += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert_eq!(testcases, SNAPSHOT_FILES.len());
    assert_eq!(failures, 4, "one failure per ERROR");
    snapshot("validate.junit.xml", &out);
}

#[test]
fn github_annotations_escape_as_the_actions_toolkit() {
    let file = PolicyFile {
        path: "odd,dir:x/50%.json".to_owned(),
        text: "{}\n".to_owned(),
    };
    let finding = Finding {
        path: file.path.clone(),
        location: Location {
            line: 1,
            column: 1,
            end_line: 1,
            end_column: 3,
        },
        field: "policy".to_owned(),
        reason: "A,B:C".to_owned(),
        severity: Severity::Error,
        message: "100% wrong: a, b\r\nnext line".to_owned(),
    };
    let out = output::report(Format::Github, Color::Never, &[file], &[finding]);
    assert_eq!(
        out,
        "::group::odd,dir:x/50%25.json\n\
         ::error file=odd%2Cdir%3Ax/50%25.json,line=1,col=1,endLine=1,endColumn=3,title=A%2CB%3AC::policy: 100%25 wrong: a, b%0D%0Anext line\n\
         ::endgroup::\n\
         1 file, 0 valid, 1 error, 0 warnings\n"
    );
}

#[test]
fn an_empty_directory_fails_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    assert_eq!(code(&provisionctl(&["validate", path])), 1);
    assert_eq!(code(&provisionctl(&["validate", "--allow-empty", path])), 0);
    // -R recurses; symlinks are skipped.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/bad/webhook.json"),
        dir.path().join("sub/webhook.json"),
    )
    .unwrap();
    assert_eq!(code(&provisionctl(&["validate", path])), 1, "not recursing");
    assert_eq!(code(&provisionctl(&["validate", "-R", path])), 1);
    let output = provisionctl(&["validate", "-R", "-o", "json", path]);
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["summary"]["files"], 1);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            dir.path().join("sub/webhook.json"),
            dir.path().join("link.json"),
        )
        .unwrap();
        let output = provisionctl(&["validate", "-o", "json", "--allow-empty", path]);
        let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(report["summary"]["files"], 0, "the symlink is skipped");
    }
}

#[test]
fn usage_errors_exit_64() {
    assert_eq!(code(&provisionctl(&["validate"])), 64);
    assert_eq!(code(&provisionctl(&["validate", "--bogus", "x.json"])), 64);
}

#[test]
fn an_unreachable_server_exits_4() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let server = format!("http://{address}");
    let output = provisionctl(&[
        "validate",
        "--server",
        &server,
        "--timeout",
        "2s",
        "tests/cli/delegates/dangling.json",
    ]);
    assert_eq!(code(&output), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dangling_delegation_passes_offline_and_fails_with_the_server() {
    let server = common::TestServer::start().await;
    let file = "tests/cli/delegates/dangling.json";
    let offline = provisionctl(&["validate", file]);
    assert_eq!(code(&offline), 0, "{}", stdout(&offline));
    assert!(stdout(&offline).contains("notice[GRAPH_RULES_NOT_CHECKED]"));

    let address = format!("http://{}", server.address);
    let online = tokio::task::spawn_blocking(move || {
        provisionctl(&["validate", "--server", &address, "-o", "json", file])
    })
    .await
    .unwrap();
    assert_eq!(
        code(&online),
        1,
        "{}{}",
        stdout(&online),
        String::from_utf8_lossy(&online.stderr)
    );
    let report: Value = serde_json::from_str(&stdout(&online)).unwrap();
    let violations = report["files"][0]["violations"].as_array().unwrap();
    let dangling = violations
        .iter()
        .find(|violation| violation["reason"] == "DANGLING_DELEGATION")
        .expect("a DANGLING_DELEGATION");
    // Located in the file, not dropped at line 1.
    let field = dangling["field"].as_str().unwrap();
    assert!(
        field.starts_with("policy.provision_policy.delegated"),
        "{field}"
    );
    let line = dangling["line"].as_u64().unwrap();
    assert_eq!(line, position(&fixture(file), "\"delegated\"", 0).0);
    // Without `implicit` and a binding, the server also refuses it: that is the error.
    assert!(
        violations
            .iter()
            .any(|violation| violation["reason"] == "MISSING_PROXY_BINDING"
                && violation["severity"] == "error")
    );

    // With `implicit`, the dangling delegation alone is a warning: exit 0, or 1 with
    // --fail-on-warn (offline it passes either way: the rule needs the stored policies).
    let file = "tests/cli/delegates/dangling_implicit.json";
    assert_eq!(
        code(&provisionctl(&["validate", "--fail-on-warn", file])),
        0
    );
    for (fail_on_warn, expected) in [(false, 0), (true, 1)] {
        let address = format!("http://{}", server.address);
        let online = tokio::task::spawn_blocking(move || {
            let mut args = vec!["validate", "--server", &address, file];
            if fail_on_warn {
                args.push("--fail-on-warn");
            }
            provisionctl(&args)
        })
        .await
        .unwrap();
        assert_eq!(code(&online), expected, "{}", stdout(&online));
        assert!(stdout(&online).contains("warning[DANGLING_DELEGATION]"));
    }
    server.stop().await;
}

/// The composite action's validate step, run as the runner would (bash, its env), with the
/// built binary: the examples pass, a broken file fails with annotations, no match fails.
#[test]
fn the_github_action_runs_validate_and_fails_on_no_match() {
    let action = fixture(".github/actions/provisionctl/action.yml");
    let step = &action[action.find("- name: Validate").expect("a Validate step")..];
    let script: String = step[step.find("run: |").unwrap() + "run: |".len()..]
        .lines()
        .skip(1)
        .map(|line| format!("{}\n", line.strip_prefix("        ").unwrap_or(line)))
        .collect();
    assert!(script.contains("validate -o github"));
    let run = |files: &str| {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("FILES", files)
            .env("ARGS", "")
            .env("BINARY", BIN)
            .env_remove("PROVISIONCTL_SERVER")
            .output()
            .expect("bash runs")
    };
    assert_eq!(code(&run("examples/policies/")), 0);
    let broken = run("tests/cli/bad/webhook.json");
    assert_eq!(code(&broken), 1);
    assert!(stdout(&broken).contains("::error file=tests/cli/bad/webhook.json,line="));
    assert_eq!(code(&run("no-such-dir/*.json")), 1);
}
