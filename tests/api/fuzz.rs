//! schemathesis against the served OpenAPI document: generated requests, valid and not, to
//! every operation, with every check it has: no 5xx; every answer as the spec describes it
//! (status, content type, headers, body schema); every schema-valid request accepted
//! (positive data acceptance: the spec states each limit the API enforces); invalid ones
//! refused; and the stateful phase, which follows the spec's links from one answer to the
//! next request. tests/py/schemathesis_hooks.py applies the two rules a schema cannot state
//! (a future `expires_at`, a webhook host that resolves) and the cloud's (its region, a Glance
//! cursor); tests/py/schemathesis.toml lets a
//! valid request meet 412 (an ETag that changed). The broker has the rig's real Keystone and
//! Glance as its cloud, so the operations that read them (a project's images, project search,
//! dependents) answer as in production.

use tokio::process::Command;

use crate::helpers::spawn_app_with_cloud;
use crate::openstack::{broker_cloud, env};

#[tokio::test]
async fn generated_requests_get_no_server_error_and_only_answers_the_spec_describes() {
    let app = spawn_app_with_cloud(Some(broker_cloud()), |_| {}).await;
    let seed = std::env::var("GSB_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let py = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py");
    let config = py.join("schemathesis.toml").display().to_string();
    let output = Command::new(env("SCHEMATHESIS"))
        .args([
            "--config-file",
            &config,
            "run",
            &app.url("/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {}", app.admin),
            "--checks",
            "all",
            "--max-examples",
            "80",
            "--seed",
            &seed,
            // One thread: with two, Python 3.11 intermittently fails inside hypothesis
            // ("SystemError: AST constructor recursion depth mismatch"), a runtime error of the
            // tool, not a finding. It costs no time here.
            "--workers",
            "1",
        ])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("GSB_FUZZ_REGION", env("REGION"))
        .env("PYTHONPATH", &py)
        // It keeps a cache in its working directory: not in the repository.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("schemathesis runs (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems (seed {seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "3570 generated, 3570 passed, 44 skipped"
    let summary = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no test-case count in:\n{stdout}"));
    let count = |word: &str| -> usize {
        summary
            .split(", ")
            .find_map(|part| part.strip_suffix(word)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let generated = count(" generated");
    assert!(generated >= 1000, "only {generated} requests generated:\n{stdout}");
    assert_eq!(count(" passed"), generated, "every generated case passes:\n{stdout}");
    assert!(
        stdout.contains("Stateful") && stdout.contains("Coverage") && stdout.contains("Fuzzing"),
        "every phase ran, the stateful one following the spec's links:\n{stdout}"
    );
}
