//! `switchboard admin feed-clients`: the secure feed's registered clients.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use switchboard_core::feed::crypto;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::client::AdminClient;

use crate::admin::{CALL_TIMEOUT, check, unexpected};

/// What to do with feed clients.
#[derive(clap::Subcommand)]
pub enum FeedClientsAction {
    /// Register a client (or give it a new key): it acts with the permissions of `--user`.
    Add {
        /// The client id (as in its hello).
        id: String,
        /// Its RSA public key, PEM (SubjectPublicKeyInfo or PKCS#1).
        #[arg(long)]
        public_key: PathBuf,
        /// The hub user it acts as.
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// List the clients with their user, last INBOX sequence and key fingerprint.
    List,
    /// Remove a client (its live connection is closed).
    Remove {
        /// The client id.
        id: String,
    },
}

/// Runs a `feed-clients` action.
pub async fn run(client: &mut AdminClient, action: FeedClientsAction) -> io::Result<ExitCode> {
    match action {
        FeedClientsAction::Add {
            id,
            public_key,
            user,
        } => {
            let pem = std::fs::read_to_string(&public_key)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", public_key.display())))?;
            let key = crypto::public_key_from_pem(&pem)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let rid = client.request_id();
            let req = pb::FeedClientAddRequest {
                request_id: rid,
                client_id: id,
                public_key_der: crypto::public_key_der(&key).into(),
                user,
            };
            let Body::FeedClientAddResponse(r) = check(
                client
                    .call(rid, Body::FeedClientAddRequest(req), CALL_TIMEOUT)
                    .await?,
            )?
            else {
                return Err(unexpected());
            };
            if let Some(c) = r.client {
                println!(
                    "feed client {} acts as {} (key sha256 {})",
                    c.client_id, c.user, c.key_sha256
                );
            }
        }
        FeedClientsAction::List => {
            println!(
                "{:<24} {:<16} {:>10}  key sha256",
                "client", "user", "sequence"
            );
            let mut after = String::new();
            loop {
                let rid = client.request_id();
                let req = pb::FeedClientListRequest {
                    request_id: rid,
                    after: after.clone(),
                };
                let Body::FeedClientListResponse(r) = check(
                    client
                        .call(rid, Body::FeedClientListRequest(req), CALL_TIMEOUT)
                        .await?,
                )?
                else {
                    return Err(unexpected());
                };
                for c in &r.clients {
                    println!(
                        "{:<24} {:<16} {:>10}  {}",
                        c.client_id, c.user, c.last_sequence, c.key_sha256
                    );
                }
                match r.clients.last() {
                    Some(last) if r.more => after = last.client_id.clone(),
                    _ => break,
                }
            }
        }
        FeedClientsAction::Remove { id } => {
            let rid = client.request_id();
            let req = pb::FeedClientRemoveRequest {
                request_id: rid,
                client_id: id.clone(),
            };
            let Body::FeedClientRemoveResponse(r) = check(
                client
                    .call(rid, Body::FeedClientRemoveRequest(req), CALL_TIMEOUT)
                    .await?,
            )?
            else {
                return Err(unexpected());
            };
            if !r.removed {
                eprintln!("no feed client {id:?}");
                return Ok(ExitCode::from(1));
            }
            println!("removed feed client {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
