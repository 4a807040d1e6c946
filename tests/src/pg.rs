//! A throwaway PostgreSQL cluster for tests: Debian's server binaries (`initdb`, `pg_ctl`), a
//! data directory under the system temp dir, a free loopback port, trust authentication for
//! the `postgres` role, no fsync (nothing here must survive the machine). As root the cluster
//! runs as `nobody` (PostgreSQL refuses root). Stopped and deleted on drop, whatever happens.
//!
//! `scripts/test.sh` installs Debian's `postgresql` when it is missing.
#![allow(clippy::disallowed_methods)] // a harness of real processes: real sockets and time

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A running cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    run_as: Option<String>,
    next_db: u32,
    tls: bool,
}

/// The directory of the server binaries, if PostgreSQL is installed.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgCluster {
    /// Creates and starts a cluster. Panics with a clear message when PostgreSQL is missing
    /// or does not start.
    pub fn start() -> PgCluster {
        Self::start_with(None)
    }

    /// A cluster that accepts TLS connections only (`hostssl` in pg_hba.conf), presenting
    /// `cert_pem` with `key_pem`.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> PgCluster {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> PgCluster {
        let bin = bin_dir().unwrap_or_else(|| {
            panic!("PostgreSQL server binaries not found under /usr/lib/postgresql (scripts/test.sh installs Debian's postgresql)")
        });
        let dir = std::env::temp_dir().join(format!(
            "switchboard-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let run_as = is_root().then(|| "nobody".to_string());
        if run_as.is_some() {
            let st = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(st.success(), "chown of {} to nobody failed", dir.display());
        }
        let c = PgCluster {
            dir,
            bin,
            port: free_port(),
            run_as,
            next_db: 0,
            tls: tls.is_some(),
        };
        let data = c.data_dir();
        let out = c.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed:\n{}", text(&out));
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(data.join("server.crt"), cert).expect("server.crt");
            std::fs::write(data.join("server.key"), key).expect("server.key");
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("key mode");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("pg_hba.conf");
            if c.run_as.is_some() {
                let st = Command::new("chown")
                    .args(["-R", "nobody"])
                    .arg(&data)
                    .status()
                    .expect("chown");
                assert!(st.success());
            }
        }
        c.pg_ctl_start();
        c
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(&self.dir);
        cmd.output()
            .unwrap_or_else(|e| panic!("{}: {e}", exe.display()))
    }

    fn pg_ctl_start(&self) {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        if self.tls {
            opts.push_str(" -c ssl=on");
        }
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed:\n{}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Accepting TCP connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: sessions are cut).
    pub fn stop(&self) {
        let data = self.data_dir();
        let _ = self.run("pg_ctl", &["-D", path(&data), "-m", "fast", "-w", "stop"]);
    }

    /// Starts it again after [`stop`](Self::stop), on the same port.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// A URL for database `db` as the `postgres` role.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database; returns its URL.
    pub fn create_db(&mut self) -> String {
        self.next_db += 1;
        let name = format!("t{}", self.next_db);
        // Over the Unix socket in the cluster's directory (also when TCP needs TLS).
        let mut cfg = postgres::Config::new();
        cfg.host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        let mut admin = cfg
            .connect(postgres::NoTls)
            .expect("connect to the cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
