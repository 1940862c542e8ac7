//! Postgres clusters of a test's own, in temporary folders, so that stopping, killing or
//! promoting one disturbs no other test: a primary, and a streaming standby of it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// One cluster: its data folder and port.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A folder the `postgres` user owns when we are root (Postgres refuses to run as root).
fn data_folder() -> PathBuf {
    let data = std::env::temp_dir().join(format!("gsb-pg-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
    }
    data
}

impl PrivatePostgres {
    fn bin_dir() -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
            .unwrap_or_default();
        dirs.retain(|d| d.join("initdb").exists());
        dirs.sort_by_key(|d| {
            d.parent()
                .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop()
            .expect("a Postgres server under /usr/lib/postgresql (scripts/test.sh installs one)")
    }

    /// A Postgres tool, run as the `postgres` user when we are root.
    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let program = self.bin.join(tool);
        let mut command = if nix::unistd::Uid::effective().is_root() {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        command.args(args).stdout(Stdio::null());
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let status = self
            .command(tool, args)
            .status()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(status.success(), "{tool} {args:?}: {status}");
    }

    fn data(&self) -> &str {
        self.data.to_str().unwrap()
    }

    /// A new cluster (trust auth, superuser `postgres`), started.
    pub fn create() -> PrivatePostgres {
        let pg = PrivatePostgres {
            bin: Self::bin_dir(),
            data: data_folder(),
            port: free_port(),
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start();
        pg
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started on a port of its own.
    /// It names itself `standby` to the primary, and asks for no synchronous standby of its
    /// own once promoted.
    pub fn standby_of(primary: &PrivatePostgres) -> PrivatePostgres {
        let pg = PrivatePostgres {
            bin: primary.bin.clone(),
            data: data_folder(),
            port: free_port(),
        };
        let port = primary.port.to_string();
        pg.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                pg.data(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        // Postgres refuses a data folder others may read; pg_basebackup leaves it as made.
        std::fs::set_permissions(&pg.data, std::fs::Permissions::from_mode(0o700)).unwrap();
        pg.append_conf(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name=standby'\n\
             synchronous_standby_names = ''\n"
        ));
        pg.start();
        pg
    }

    fn append_conf(&self, lines: &str) {
        let conf = Path::new(&self.data).join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
        text.push_str(lines);
        std::fs::write(&conf, text).unwrap();
    }

    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let log = self.data.join("log");
        let status = self
            .command(
                "pg_ctl",
                &[
                    "-D",
                    self.data(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "start",
                ],
            )
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pg_ctl start: {status}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// A clean stop.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// A hard stop, as a crash of its host would be: no shutdown checkpoint.
    pub fn kill(&self) {
        self.run("pg_ctl", &["-D", self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// Ends a standby's recovery: it takes writes from now on.
    pub fn promote(&self) {
        self.run("pg_ctl", &["-D", self.data(), "-w", "promote"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A small pool on it.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.url())
            .await
            .unwrap()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl", &["-D", self.data(), "-m", "immediate", "stop"])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
