//! `switchboard serve`.

use std::io;
use std::process::ExitCode;

use switchboard_core::kv::KvConfig;
use switchboard_runtime_smol::client::seed;
use switchboard_runtime_smol::pki;
use switchboard_runtime_smol::server::{HubServer, Listeners, ServerOptions, WebFront};
use switchboard_runtime_smol::store::{PostgresOptions, PostgresStore, Store};

use crate::DataDirArg;
use crate::datadir::DataDir;

/// Arguments of `serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// A configuration file (a `[serve]`, `[agent]` or `[relay]` table; flags override it). Default
    /// for serve: DATA_DIR/switchboard.toml when it exists.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    data: DataDirArg,
    /// Lifetime in days of the certificates agents get by renewal (at most 365).
    #[arg(long, default_value_t = pki::MAX_CLIENT_CERT_DAYS)]
    cert_days: u32,
    /// Address of the native protocol (agents and operators, mutual TLS).
    #[arg(long, default_value = "0.0.0.0:8768")]
    listen: String,
    /// Address of the KV control front (plain TCP, seed 002). Bound anywhere but loopback, it
    /// requires HMAC-signed requests. "off" disables it.
    #[arg(long, default_value = "127.0.0.1:8085")]
    kv_listen: String,
    /// Address of the web face: HTTP and WebSocket, plain (ws://, http://) and TLS with the
    /// hub's certificate (wss://, https://) on the same port; JSON-RPC at /rpc, binary native
    /// frames at /stream, the console at /. "off" disables it.
    #[arg(long, default_value = "0.0.0.0:8769")]
    web_listen: String,
    /// The UDP relay: "local" (a thread of this process, channel sockets bound to
    /// --relay-bind), "off", or the control address of a `switchboard relay` process
    /// (commands signed with DATA_DIR/relay.key).
    #[arg(long, default_value = "local")]
    relay: String,
    /// Seconds of silence after which the local relay removes a member (seed 002: 60).
    #[arg(long, default_value_t = 60)]
    member_expiry: u64,
    /// Address the local relay's channel sockets bind to.
    #[arg(long, default_value = "0.0.0.0")]
    relay_bind: std::net::IpAddr,
    /// UDP ports for voice channels, FIRST-LAST.
    #[arg(long, default_value = "50000-50999")]
    relay_ports: String,
    /// Events the ordered event log keeps (older ones are pruned; subscribing before them is
    /// refused with GONE).
    #[arg(long, default_value_t = 1_000_000)]
    event_retention: u64,
    /// Ping interval of agent links, seconds (RedPepper's default is 30).
    #[arg(long, default_value_t = 30)]
    ping_interval: u64,
    /// Where the hub's state lives: a PostgreSQL URL (`postgres://USER@HOST:PORT/DB`, password
    /// in the URL or in PGPASSWORD) or "sqlite" (the default: hub.sqlite in the data dir).
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// The CA (PEM file) of the PostgreSQL server's certificate: TLS to the server, verified
    /// (with `sslmode=require` in the URL, TLS or nothing).
    #[arg(long)]
    store_ca: Option<std::path::PathBuf>,
}

/// Runs the hub until Ctrl-C.
pub fn run(args: ServeArgs) -> io::Result<ExitCode> {
    let dir = args.data.path();
    let (data, created) = DataDir::ensure(&dir)?;
    if !created.is_empty() {
        let example = dir.join(format!("{}.example", crate::config::FILE_NAME));
        if !example.exists() {
            std::fs::write(&example, crate::config::example("serve"))?;
        }
        println!("switchboard: created in {}:", dir.display());
        for f in &created {
            println!("  {f}");
        }
    }
    crate::loadgen::raise_nofile_limit();
    let mut store = open_store(&data, &args.store, args.store_ca.as_deref())?;
    ensure_admin_credentials(&mut store)?;
    let mut opts = ServerOptions::new(data.server_tls()?, seed());
    let ca =
        pki::Ca::load(data.pki.ca.cert_pem(), &data.pki.ca.key_pem()).map_err(io::Error::other)?;
    opts.ca = Some(std::sync::Arc::new(ca));
    opts.cert_days = args.cert_days.clamp(1, pki::MAX_CLIENT_CERT_DAYS);
    opts.hub.link.ping_interval = std::time::Duration::from_secs(args.ping_interval.max(1));
    opts.hub.relay_ports = parse_port_range(&args.relay_ports)?;
    opts.hub.event_retention = args.event_retention.max(1);
    smol::block_on(async {
        let listener = async_net::TcpListener::bind(args.listen.as_str())
            .await
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen))
            })?;
        let kv = match args.kv_listen.as_str() {
            "off" => None,
            addr => {
                let l = async_net::TcpListener::bind(addr).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
                let require_signature = !l.local_addr()?.ip().is_loopback();
                Some((
                    l,
                    KvConfig {
                        require_signature,
                        ..KvConfig::default()
                    },
                ))
            }
        };
        let web = match args.web_listen.as_str() {
            "off" => None,
            addr => {
                let l = async_net::TcpListener::bind(addr).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
                let (feed_key, created) =
                    switchboard_runtime_smol::feed_keys::load_or_create(&dir)?;
                if created {
                    println!(
                        "switchboard: created the secure feed's key pair; clients need {}",
                        dir.join(switchboard_runtime_smol::feed_keys::PUBLIC_FILE)
                            .display()
                    );
                }
                Some((l, WebFront::new(Some(data.web_tls()?)).with_feed(feed_key)))
            }
        };
        let (relay, _relay_handle) = match args.relay.as_str() {
            "off" => (None, None),
            "local" => {
                let (bridge, handle) =
                    crate::relay_cmd::local_with(switchboard_runtime_mio::RelayServerConfig {
                        bind_ip: args.relay_bind,
                        relay: crate::relay_cmd::relay_config(args.member_expiry),
                        ..switchboard_runtime_mio::RelayServerConfig::default()
                    })?;
                (Some(bridge), Some(handle))
            }
            addr => {
                let control: std::net::SocketAddr = addr.parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("--relay {addr:?}: want local, off or HOST:PORT"),
                    )
                })?;
                let key = crate::relay_cmd::ensure_key(&dir)?;
                println!(
                    "switchboard: channel commands go to the relay at {control} (signed with {})",
                    dir.join(crate::relay_cmd::KEY_FILE).display()
                );
                (Some(crate::relay_cmd::remote(control, key)?), None)
            }
        };
        let server = HubServer::start_with(
            opts,
            store,
            Listeners {
                native: listener,
                kv,
                web,
            },
            relay,
            None,
        )?;
        data.record_addr(server.local_addr)?;
        println!(
            "switchboard: hub listening on {} (data dir {})",
            server.local_addr,
            dir.display()
        );
        if let Some(a) = server.kv_addr {
            std::fs::write(dir.join("kv.addr"), format!("{a}\n"))?;
            let how = if a.ip().is_loopback() {
                "unsigned, loopback only"
            } else {
                "HMAC-signed requests required"
            };
            println!("switchboard: KV control front on {a} ({how})");
        }
        if let Some(a) = server.web_addr {
            std::fs::write(dir.join("web.addr"), format!("{a}\n"))?;
            println!(
                "switchboard: web face on {a}: console http://{a}/ (or https), JSON-RPC ws://{a}/rpc (or wss), POST /rpc"
            );
        }
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        ctrlc::set_handler(move || {
            let _ = stop_tx.try_send(());
        })
        .map_err(io::Error::other)?;
        server
            .run_until(async {
                let _ = stop_rx.recv().await;
                println!("switchboard: shutting down");
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Parses "FIRST-LAST" into (first, count).
pub fn parse_port_range(s: &str) -> io::Result<(u16, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad port range {s:?} (want FIRST-LAST)"),
        )
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b - a + 1))
}

/// The store `--store` names: SQLite in the data dir, or a PostgreSQL server (which must be
/// reachable now: a hub does not start without its state).
pub fn open_store(
    data: &DataDir,
    spec: &str,
    ca: Option<&std::path::Path>,
) -> io::Result<Box<dyn Store>> {
    if spec == "sqlite" {
        return Ok(Box::new(data.store()?));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let opts = postgres_options(spec, ca)?;
        let store = PostgresStore::open(&opts)
            .map_err(|e| io::Error::other(format!("cannot open the PostgreSQL store: {e}")))?;
        tracing::info!(store = %store.describe(), "using PostgreSQL");
        return Ok(Box::new(store));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("--store {spec:?}: expected \"sqlite\" or a postgres:// URL"),
    ))
}

/// The options of a PostgreSQL store: the URL, PGPASSWORD, the CA file for TLS.
pub fn postgres_options(url: &str, ca: Option<&std::path::Path>) -> io::Result<PostgresOptions> {
    let mut opts = PostgresOptions::new(url);
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        opts.password = Some(pw);
    }
    if let Some(path) = ca {
        opts.ca_pem = Some(std::fs::read(path).map_err(|e| {
            io::Error::new(e.kind(), format!("--store-ca {}: {e}", path.display()))
        })?);
    }
    Ok(opts)
}

/// On first run, creates the admin user with a random password and TOTP secret and prints
/// them once (the password is not stored, only its argon2id hash).
fn ensure_admin_credentials(store: &mut dyn Store) -> io::Result<()> {
    use switchboard_core::auth::totp;
    use switchboard_core::hub::{Change, UserRecord};
    use switchboard_core::perm::Permissions;
    let state = store.load().map_err(io::Error::other)?;
    if state.users.iter().any(|u| u.name == "admin") {
        return Ok(());
    }
    let uid = state.users.iter().map(|u| u.uid).max().unwrap_or(0) + 1;
    let password = switchboard_runtime_smol::secret::generate_secret()[..24].to_string();
    let totp_secret = hex::decode(&switchboard_runtime_smol::secret::generate_secret()[..40])
        .map_err(io::Error::other)?;
    let hash = switchboard_runtime_smol::secret::hash_secret(
        &password,
        switchboard_runtime_smol::secret::default_params(),
    )
    .map_err(io::Error::other)?;
    let admin = UserRecord {
        uid,
        name: "admin".into(),
        permissions: Permissions::ADMIN.0,
        password_hash: hash,
        totp_secret: hex::encode(&totp_secret),
        ..UserRecord::default()
    };
    store
        .apply(&Change::UserRegistered(admin))
        .map_err(io::Error::other)?;
    println!("switchboard: created the user admin. Shown once, keep them:");
    println!("  password: {password}");
    let uri = totp::otpauth_uri("Switchboard", "admin", &totp_secret);
    println!("  TOTP:     {uri}");
    if let Ok(qr) = qrcode::QrCode::new(uri.as_bytes()) {
        let art = qr
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build();
        println!("{art}");
    }
    println!(
        "  (TOTP secret, base32: {})",
        totp::base32_encode(&totp_secret)
    );
    Ok(())
}
