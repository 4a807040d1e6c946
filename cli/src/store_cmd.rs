//! `switchboard store migrate`: copies a hub's SQLite state into an empty PostgreSQL database.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use switchboard_runtime_smol::store::{self, PostgresStore, SqliteStore, Store};

/// Arguments of `store`.
#[derive(clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand)]
enum StoreCommand {
    /// Copy everything of a data dir's SQLite store (users, channels, agents, the whole command
    /// log and event log, certificates, feed clients) into an empty PostgreSQL database, then
    /// check that both load the same. Stop the hub first; afterwards run it with
    /// `serve --store URL` (the data dir keeps its certificates and keys).
    Migrate {
        /// The data dir whose hub.sqlite is copied.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL URL (postgres://USER@HOST:PORT/DB; password in it or in PGPASSWORD).
        #[arg(long)]
        to: String,
        /// The CA (PEM file) of the server's certificate, for TLS.
        #[arg(long)]
        store_ca: Option<PathBuf>,
    },
}

/// Runs a store command.
pub fn run(a: StoreArgs) -> io::Result<ExitCode> {
    match a.command {
        StoreCommand::Migrate { from, to, store_ca } => migrate(&from, &to, store_ca.as_deref()),
    }
}

fn migrate(from: &std::path::Path, to: &str, ca: Option<&std::path::Path>) -> io::Result<ExitCode> {
    let db = from.join(crate::datadir::DB_FILE);
    if !db.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} does not exist", db.display()),
        ));
    }
    let mut source = SqliteStore::open(&db).map_err(io::Error::other)?;
    let opts = crate::serve::postgres_options(to, ca)?;
    let mut target = PostgresStore::open(&opts)
        .map_err(|e| io::Error::other(format!("cannot open the PostgreSQL store: {e}")))?;
    let export = Store::export(&mut source).map_err(io::Error::other)?;
    let written = store::import(&mut target, &export).map_err(io::Error::other)?;
    let a = Store::load(&mut source).map_err(io::Error::other)?;
    let b = target.load().map_err(io::Error::other)?;
    let commands = |s: &mut dyn Store| s.list_commands(usize::MAX).map(|c| c.len());
    let events = |s: &mut dyn Store| s.read_events(0, usize::MAX).map(|e| e.len());
    let same = format!("{a:?}") == format!("{b:?}")
        && commands(&mut source).ok() == commands(&mut target).ok()
        && events(&mut source).ok() == events(&mut target).ok();
    if !same {
        eprintln!(
            "switchboard: the copy in {} does not load as the original",
            target.describe()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "migrated {} -> {}: {written} changes ({} users, {} channels, {} agents, {} commands, {} events); both load the same",
        Store::describe(&source),
        target.describe(),
        b.users.len(),
        b.channels.len(),
        b.agents.len(),
        commands(&mut target).unwrap_or(0),
        events(&mut target).unwrap_or(0),
    );
    Ok(ExitCode::SUCCESS)
}
