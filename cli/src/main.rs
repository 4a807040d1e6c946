//! `switchboard`: the hub, the agent, and the tools around them.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod admin;
mod agent_cmd;
mod certs;
mod config;
mod datadir;
mod demo;
mod demo_voice;
mod feed_clients;
mod loadgen;
mod relay_cmd;
mod serve;
mod store_cmd;
mod stream_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What `--version` prints after the name: the crate's version and the git revision it was
/// built from (`build.rs`: 12 hex digits, `-dirty` with uncommitted changes, or `unknown`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SWITCHBOARD_GIT_REV"),
    ")"
);

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Switchboard: a hub for fleets of agents and real-time channels.
#[derive(Parser)]
#[command(name = "switchboard", version = VERSION, about)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "switchboard=debug".
    /// Default: "info" ("warn" for the demo and loadgen, whose summaries are the point).
    #[arg(long, global = true, env = "SWITCHBOARD_LOG")]
    log: Option<String>,
    /// Log lines as text (the default) or as JSON objects, one per line (timestamp, level,
    /// target, message and fields), for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (creates the data dir on first run).
    Serve(serve::ServeArgs),
    /// Talk to a running hub with the admin certificate.
    Admin(admin::AdminArgs),
    /// Certificates: list, revoke, renew a user's by hand.
    Certs(certs::CertsArgs),
    /// Run an agent connected to a hub (or a RedPepper 0.0.x manager).
    Agent(agent_cmd::AgentArgs),
    /// A hub and three agents on loopback in one process: commands, progress, a cancel.
    Demo(demo::DemoArgs),
    /// Load generators (bounded in count and time, loopback only).
    Loadgen(loadgen::LoadgenArgs),
    /// Run the UDP channel relay as its own process, taking the hub's signed commands.
    Relay(relay_cmd::RelayArgs),
    /// Live streams from agents (metrics, tail, shell) and the hub's list of streams.
    Stream(stream_cmd::StreamArgs),
    /// The hub's store: migrate SQLite to PostgreSQL.
    Store(store_cmd::StoreArgs),
    /// The configuration file: check one, show the effective configuration.
    Config(config::ConfigArgs),
}

/// Where the data dir is, for the commands that use one.
#[derive(clap::Args, Clone)]
pub struct DataDirArg {
    /// The hub's data directory (default: $SWITCHBOARD_DATA_DIR or ./switchboard-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// The chosen path.
    pub fn path(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(datadir::default_dir)
    }
}

fn main() -> ExitCode {
    // The configuration file's values become flags before clap parses (see `config`).
    let argv = match config::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let default = if matches!(cli.command, Command::Demo(_) | Command::Loadgen(_)) {
        "warn"
    } else {
        "info"
    };
    let log = cli.log.as_deref().unwrap_or(default);
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Admin(a) => admin::run(a),
        Command::Certs(a) => certs::run(a),
        Command::Agent(a) => agent_cmd::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Loadgen(a) => loadgen::run(a),
        Command::Relay(a) => relay_cmd::run(a),
        Command::Stream(a) => stream_cmd::run(a),
        Command::Store(a) => store_cmd::run(a),
        Command::Config(a) => config::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::FAILURE
        }
    }
}
