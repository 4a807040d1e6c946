//! `switchboard agent`.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchboard_core::link::{AgentConfig, Backoff, LinkConfig};
use switchboard_runtime_smol::agent::{AgentOptions, RenewalFiles, run_agent};
use switchboard_runtime_smol::client::seed;
use switchboard_runtime_smol::pki;
use switchboard_runtime_smol::sources::SourceOptions;
use switchboard_runtime_smol::tls;

/// Arguments of `agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// A configuration file (a `[serve]`, `[agent]` or `[relay]` table; flags override it). Default
    /// for serve: DATA_DIR/switchboard.toml when it exists.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The manager (a Switchboard hub or a RedPepper 0.0.x manager), HOST:PORT.
    #[arg(long)]
    manager: String,
    /// The agent id.
    #[arg(long)]
    id: String,
    /// File holding the agent secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// CA certificate that signed the manager's certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// The agent's certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The agent's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Name to check the manager's certificate against (default: the host of --manager).
    #[arg(long)]
    server_name: Option<String>,
    /// Ping interval in seconds.
    #[arg(long, default_value_t = 30)]
    ping_interval: u64,
    /// Ping timeout in seconds.
    #[arg(long, default_value_t = 10)]
    ping_timeout: u64,
    /// Do not renew the certificate (needed against a RedPepper 0.0.x manager, which does not
    /// know renewal). By default the agent asks the hub for a new certificate at two thirds of
    /// its lifetime and rewrites --cert and --key.
    #[arg(long)]
    no_renew: bool,
    /// A directory whose files `tail` streams may follow (repeat for more; none: tail is off).
    #[arg(long = "tail-dir")]
    tail_dirs: Vec<PathBuf>,
    /// Do not offer `shell` streams (a shell also needs run_command at the hub).
    #[arg(long)]
    no_shell: bool,
    /// Do not announce streams at all (as a RedPepper 0.0.x agent).
    #[arg(long)]
    no_streams: bool,
}

/// Host part of HOST:PORT (IPv6 in brackets allowed).
pub fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Runs the agent until Ctrl-C.
pub fn run(a: AgentArgs) -> io::Result<ExitCode> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let secret = String::from_utf8_lossy(&read(&a.secret_file)?)
        .trim()
        .to_string();
    let renewal = (!a.no_renew).then(|| -> io::Result<RenewalFiles> {
        Ok(RenewalFiles {
            ca_pem: read(&a.ca)?,
            cert_path: a.cert.clone(),
            key_path: a.key.clone(),
        })
    });
    let renewal = renewal.transpose()?;
    if renewal.is_some() {
        // Finish a renewal a crash interrupted before the files are read.
        pki::recover_renewal(&a.cert, &a.key).map_err(io::Error::other)?;
    }
    let tls = tls::client_config(&read(&a.ca)?, &read(&a.cert)?, &read(&a.key)?)
        .map_err(io::Error::other)?;
    let link = LinkConfig {
        ping_interval: Duration::from_secs(a.ping_interval.max(1)),
        ping_timeout: Duration::from_secs(a.ping_timeout.max(1)),
        ..LinkConfig::default()
    };
    let opts = AgentOptions {
        server_name: a.server_name.clone().unwrap_or_else(|| host_of(&a.manager)),
        manager: a.manager,
        tls,
        agent: AgentConfig {
            agent_id: a.id,
            secret,
            link,
        },
        backoff: Backoff::default(),
        seed: seed(),
        connect_timeout: Duration::from_secs(10),
        renewal,
        streams: (!a.no_streams).then(|| SourceOptions {
            tail_dirs: a.tail_dirs.clone(),
            shell: !a.no_shell,
            ..Default::default()
        }),
    };
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        stop_tx.close();
    })
    .map_err(io::Error::other)?;
    smol::block_on(run_agent(opts, stop_rx, None));
    Ok(ExitCode::SUCCESS)
}
