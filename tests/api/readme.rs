//! The README as a new user meets it: its quickstart, pasted into a shell against a broker
//! started by `scripts/dev.sh`, runs and prints what the README promises.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::free_port;
use crate::helpers::fresh_database;
use crate::openstack::{Rig, env};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README's block fenced as ```` ```sh quickstart ````.
fn quickstart() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (_, rest) = readme
        .split_once("```sh quickstart\n")
        .expect("README.md has a ```sh quickstart block");
    let (block, _) = rest.split_once("\n```").expect("the quickstart block is closed");
    block.to_owned()
}

/// `scripts/dev.sh` on its own database, port and state directory (its keys and `demo.env`),
/// with the OpenStack rig the tests run against; stops it when dropped.
struct DevStack {
    child: Child,
    state: PathBuf,
}

impl DevStack {
    async fn start() -> DevStack {
        let state = std::env::temp_dir().join(format!("gsb-readme-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&state).unwrap();
        let rig_state = PathBuf::from(env("OS_STATE"));
        let port = free_port();
        let log = std::fs::File::create(state.join("dev.log")).unwrap();
        // The broker `cargo test` built: dev.sh's own `cargo build`, under the test's
        // environment, would compile everything again.
        let child = Command::new("bash")
            .arg(root().join("scripts/dev.sh"))
            .env("GSB_BIN", env!("CARGO_BIN_EXE_glance-share-broker"))
            // The suite's rig is seeded, and its tests share the seeded images meanwhile.
            .env("GSB_OPENSTACK_SEED", "0")
            .env("DATABASE_URL", fresh_database().await)
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("GSB_STATE_DIR", &state)
            .env("OS_VENV", rig_state.parent().unwrap().join("venv"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let stack = DevStack { child, state };
        let client = reqwest::Client::new();
        // dev.sh checks the rig (running already: seconds) before it serves.
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
                && r.status() == 200
            {
                return stack;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("scripts/dev.sh did not serve within 2 minutes:\n{}", stack.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("dev.log")).unwrap_or_default()
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        // dev.sh execs the broker: its pid is the broker's.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

#[tokio::test]
async fn the_quickstart_runs_as_pasted() {
    // An image of its own, so the grant and revoke touch nothing another test shares.
    let image = Rig::from_env().private_image("readme-quickstart").await;
    let stack = DevStack::start().await;
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &quickstart()])
        .env("GSB_STATE_DIR", &stack.state)
        .env("IMAGE", &image)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the quickstart failed ({}):\n{stdout}\n{stderr}\n--- dev.sh:\n{}",
        out.status,
        stack.log()
    );
    for promised in [
        "request approved",
        "share accepted",
        "share revoked",
        "create success",
        "update/protect success",
        "update/unprotect success",
        "revoke success",
        "audit chain ok: true",
    ] {
        assert!(stdout.contains(promised), "the README promises `{promised}`:\n{stdout}");
    }
    // The CSV export has its header and a row per event, not a header alone.
    assert!(
        stdout.contains("seq,chain_pos,id,occurred_at,action,outcome\n"),
        "{stdout}"
    );
    for row in [",create,success\n", ",allow,success\n", ",revoke,success\n"] {
        assert!(stdout.contains(row), "the CSV has a `{row}` row:\n{stdout}");
    }
}

#[test]
fn the_readme_is_short_and_its_links_resolve() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.lines().count() <= 200, "README.md is at most ~200 lines");
    for doc in [
        "api",
        "configuration",
        "policy",
        "webhooks",
        "audit",
        "architecture",
        "operations",
        "security",
        "testing",
        "benchmarks",
    ] {
        let link = format!("(docs/{doc}.md)");
        assert!(readme.contains(&link), "README.md links {link}");
        assert!(root().join(format!("docs/{doc}.md")).exists(), "docs/{doc}.md exists");
    }
}
