//! The hub's data directory: certificates, the database, the recorded listen address.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchboard_runtime_smol::pki::{self, DataDirPki};
use switchboard_runtime_smol::store::SqliteStore;
use switchboard_runtime_smol::tls;

/// Database file name inside the data dir.
pub const DB_FILE: &str = "hub.sqlite";
/// File where `serve` records the address it listens on.
pub const ADDR_FILE: &str = "hub.addr";

/// Default data directory: `$SWITCHBOARD_DATA_DIR`, else `./switchboard-data`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("switchboard-data"))
}

/// Names the hub certificate carries.
pub fn server_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if pki::is_dns_label(h) && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    names
}

/// A loaded data dir.
pub struct DataDir {
    /// Path.
    pub dir: PathBuf,
    /// Its certificates.
    pub pki: DataDirPki,
}

impl DataDir {
    /// Opens (creating on first use) the data dir; returns what was created.
    pub fn ensure(dir: &Path) -> io::Result<(DataDir, Vec<String>)> {
        let fresh = !dir.exists();
        std::fs::create_dir_all(dir)?;
        if fresh {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let (pki, created) = DataDirPki::ensure(dir, &server_names()).map_err(io::Error::other)?;
        Ok((
            DataDir {
                dir: dir.to_path_buf(),
                pki,
            },
            created,
        ))
    }

    /// Opens an existing data dir (never creates one).
    pub fn open(dir: &Path) -> io::Result<DataDir> {
        if !dir.join(pki::CA_CERT_FILE).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is not a hub data dir (run `switchboard serve --data-dir {}` first)",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(DataDir::ensure(dir)?.0)
    }

    /// Opens the database.
    pub fn store(&self) -> io::Result<SqliteStore> {
        SqliteStore::open(&self.dir.join(DB_FILE)).map_err(io::Error::other)
    }

    /// TLS server configuration of the hub.
    pub fn server_tls(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        tls::server_config(
            self.pki.ca.cert_pem().as_bytes(),
            self.pki.hub.cert_pem.as_bytes(),
            self.pki.hub.key_pem.as_bytes(),
        )
        .map_err(io::Error::other)
    }

    /// TLS server configuration of the web face (the hub's certificate, no client
    /// certificate).
    pub fn web_tls(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        tls::web_server_config(
            self.pki.hub.cert_pem.as_bytes(),
            self.pki.hub.key_pem.as_bytes(),
        )
        .map_err(io::Error::other)
    }

    /// TLS client configuration of the admin.
    pub fn admin_tls(&self) -> io::Result<Arc<rustls::ClientConfig>> {
        tls::client_config(
            self.pki.ca.cert_pem().as_bytes(),
            self.pki.admin.cert_pem.as_bytes(),
            self.pki.admin.key_pem.as_bytes(),
        )
        .map_err(io::Error::other)
    }

    /// Records the listen address for the admin commands.
    pub fn record_addr(&self, addr: SocketAddr) -> io::Result<()> {
        std::fs::write(self.dir.join(ADDR_FILE), format!("{addr}\n"))
    }

    /// The address to reach the running hub at: `--hub`, else the recorded one (an
    /// unspecified bind address becomes loopback).
    pub fn hub_addr(&self, explicit: Option<&str>) -> io::Result<String> {
        if let Some(a) = explicit {
            return Ok(a.to_string());
        }
        let text = std::fs::read_to_string(self.dir.join(ADDR_FILE)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "no {ADDR_FILE} in {} (is the hub running? or pass --hub)",
                    self.dir.display()
                ),
            )
        })?;
        let mut addr: SocketAddr = text
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad {ADDR_FILE}")))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Ok(addr.to_string())
    }
}
