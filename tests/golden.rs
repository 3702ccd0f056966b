//! The golden bad-input suite: `tests/golden/cases.json`, run in order against one server on
//! 127.0.0.1:0, on SQLite and (when configured) PostgreSQL (see `tests/golden/README.md`). Also the body of the fuzz target over the same
//! requests, and the writer of the fuzz seed corpus.

mod common;
#[path = "golden/fuzz_check.rs"]
mod fuzz_check;
#[path = "golden/paths.rs"]
mod paths;
#[path = "golden/protojson.rs"]
mod protojson;
#[path = "golden/runner.rs"]
mod runner;

use std::path::{Path, PathBuf};

use prost::Message;
use provisiond::pb;

fn cases_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cases.json")
}

async fn run_golden_cases(server: &common::TestServer) {
    let file = runner::load(&cases_path());
    let mut client = server.client.clone();
    let failures = runner::run(&mut client, &file).await;
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n\n{}\n",
        failures.len(),
        file.cases.len(),
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn golden_cases() {
    run_golden_cases(&common::TestServer::start().await).await;
}

/// The same cases on the PostgreSQL store, when `PROVISIOND_TEST_POSTGRES_URL` names a test
/// database (CI sets it); a schema of its own, dropped afterwards.
#[tokio::test]
async fn golden_cases_on_postgres() {
    let Some(schema) = common::postgres::TestSchema::create() else {
        return;
    };
    let url = schema.store_url();
    let server = common::TestServer::start_with(|config| config.store = url).await;
    run_golden_cases(&server).await;
    server.stop().await;
}

/// Every reason of DESIGN.md 2.4 and every error code of the RPCs has a case, so the file does
/// not lose coverage when it is edited.
#[test]
fn golden_cases_cover_every_reason_and_code() {
    let file = runner::load(&cases_path());
    let expected_reasons = file.cases.iter().flat_map(|case| {
        let expect = &case.expect;
        expect
            .violations
            .iter()
            .chain(expect.violations_include.iter())
            .flatten()
            .map(|v| v.reason.clone())
    });
    let expected_reasons: std::collections::HashSet<String> = expected_reasons.collect();
    let missing: Vec<&&str> = fuzz_check::POLICY_REASONS
        .iter()
        .filter(|reason| !expected_reasons.contains(**reason))
        .collect();
    assert!(missing.is_empty(), "no case expects {missing:?}");

    let pairs: std::collections::HashSet<(String, String)> = file
        .cases
        .iter()
        .map(|case| (case.rpc.clone(), case.expect.code.clone()))
        .collect();
    let mut uncovered = Vec::new();
    for (rpc, codes) in [
        (
            "GetProvisionPolicy",
            &["OK", "INVALID_ARGUMENT", "NOT_FOUND"][..],
        ),
        ("SetProvisionPolicy", &["OK", "INVALID_ARGUMENT", "ABORTED"]),
        ("ValidateProvisionPolicy", &["OK"]),
        (
            "CreateProxyBinding",
            &["OK", "INVALID_ARGUMENT", "ALREADY_EXISTS"],
        ),
        (
            "DeleteProxyBinding",
            &["OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"],
        ),
        ("ListProxyBindings", &["OK", "INVALID_ARGUMENT"]),
    ] {
        for code in codes {
            if !pairs.contains(&(rpc.to_owned(), (*code).to_owned())) {
                uncovered.push(format!("{rpc} {code}"));
            }
        }
    }
    assert!(uncovered.is_empty(), "no case for {uncovered:?}");
}

/// The Set and Validate requests of the golden file, encoded as SetProvisionPolicyRequest.
fn golden_requests() -> Vec<(String, pb::SetProvisionPolicyRequest)> {
    let file = runner::load(&cases_path());
    file.cases
        .iter()
        .filter_map(|case| Some((case.name.clone(), runner::as_set_request(case)?)))
        .collect()
}

/// The fuzz target's body over the golden requests and a few damaged copies of each: it
/// compiles with the suite and its invariants hold on the seeds.
#[test]
fn fuzz_body_holds_on_the_golden_requests() {
    let requests = golden_requests();
    assert!(requests.len() >= 20, "only {} requests", requests.len());
    for (_, request) in &requests {
        let bytes = request.encode_to_vec();
        fuzz_check::check_request_bytes(&bytes);
        let len = bytes.len();
        for cut in [len / 3, len / 2, len.saturating_sub(1)] {
            fuzz_check::check_request_bytes(&bytes[..cut]);
        }
        for at in [1, len / 4, len / 2, len * 3 / 4] {
            if at < len {
                let mut damaged = bytes.clone();
                damaged[at] ^= 0x5a;
                fuzz_check::check_request_bytes(&damaged);
            }
        }
    }
}

/// Writes the seed corpus of the `check_policy` fuzz target: one file per golden Set or
/// Validate request and per example policy, into `$PROVISIOND_FUZZ_CORPUS` (`make fuzz` sets it
/// to `fuzz/corpus/check_policy`) or, in a plain test run, a temporary directory, and checks
/// that every seed decodes.
#[test]
fn write_fuzz_corpus() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("PROVISIOND_FUZZ_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let mut written = 0;
    let file_name = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    for (name, request) in golden_requests() {
        let path = dir.join(format!("golden-{}", file_name(&name)));
        std::fs::write(&path, request.encode_to_vec()).expect("write seed");
        written += 1;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    for entry in std::fs::read_dir(&examples).expect("examples/policies") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read example"))
                    .expect("example is JSON");
            let request: pb::SetProvisionPolicyRequest =
                protojson::from_json("SetProvisionPolicyRequest", &json).expect("example decodes");
            let stem = path.file_stem().expect("stem").to_string_lossy();
            std::fs::write(
                dir.join(format!("example-{}", file_name(&stem))),
                request.encode_to_vec(),
            )
            .expect("write seed");
            written += 1;
        }
    }
    eprintln!("wrote {written} seeds to {}", dir.display());
    assert!(written >= 40, "{written} seeds");
    for entry in std::fs::read_dir(&dir).expect("corpus") {
        let bytes = std::fs::read(entry.expect("seed").path()).expect("read seed");
        pb::SetProvisionPolicyRequest::decode(bytes.as_slice())
            .or_else(|_| {
                pb::ValidateProvisionPolicyRequest::decode(bytes.as_slice())
                    .map(|_| Default::default())
            })
            .expect("every seed decodes");
    }
}
