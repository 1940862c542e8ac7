//! The standards' own Python libraries (pycadf, standardwebhooks, prometheus_client,
//! openapi-spec-validator), run through the scripts in tests/py with `$GSB_PYTHON`, the
//! venv `scripts/lib.sh` (`ensure_pytools`) installs. Missing, the tests fail: never skip.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What a script printed on stdout, and whether it exited 0.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs tests/py/`script` with `args`, `input` on its stdin.
pub async fn run(script: &str, args: &[&str], input: &[u8]) -> Ran {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(script);
    let python = std::env::var("GSB_PYTHON").unwrap_or_else(|_| {
        panic!(
            "GSB_PYTHON is not set: run the tests through scripts/test.sh, or `. scripts/lib.sh && ensure_pytools` \
             (the standards' Python libraries check what the broker emits)"
        )
    });
    let mut child = Command::new(&python)
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} {} does not start: {e}", path.display()));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs tests/py/`script` and fails the test, with everything it said, unless it exits 0.
pub async fn check(script: &str, args: &[&str], input: &[u8]) -> String {
    let ran = run(script, args, input).await;
    assert!(ran.ok, "tests/py/{script} failed:\n{}\n{}", ran.stdout, ran.stderr);
    ran.stdout
}
