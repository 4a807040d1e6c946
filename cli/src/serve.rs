//! `switchboard serve`.

use std::io;
use std::process::ExitCode;

use switchboard_runtime_smol::client::seed;
use switchboard_runtime_smol::server::{HubServer, ServerOptions};

use crate::DataDirArg;
use crate::datadir::DataDir;

/// Arguments of `serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Address of the native protocol (agents and operators, mutual TLS).
    #[arg(long, default_value = "0.0.0.0:8768")]
    listen: String,
    /// Ping interval of agent links, seconds (RedPepper's default is 30).
    #[arg(long, default_value_t = 30)]
    ping_interval: u64,
}

/// Runs the hub until Ctrl-C.
pub fn run(args: ServeArgs) -> io::Result<ExitCode> {
    let dir = args.data.path();
    let (data, created) = DataDir::ensure(&dir)?;
    if !created.is_empty() {
        println!("switchboard: created in {}:", dir.display());
        for f in &created {
            println!("  {f}");
        }
    }
    crate::loadgen::raise_nofile_limit();
    let store = data.store()?;
    let mut opts = ServerOptions::new(data.server_tls()?, seed());
    opts.hub.link.ping_interval = std::time::Duration::from_secs(args.ping_interval.max(1));
    smol::block_on(async {
        let listener = async_net::TcpListener::bind(args.listen.as_str())
            .await
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen))
            })?;
        let server = HubServer::start(opts, store, listener, None)?;
        data.record_addr(server.local_addr)?;
        println!(
            "switchboard: hub listening on {} (data dir {})",
            server.local_addr,
            dir.display()
        );
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
