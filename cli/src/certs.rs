//! `switchboard certs`: the certificates the hub knows, revocation, and manual renewal of user
//! certificates (agents renew theirs by themselves over the link).

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::pki;

use crate::DataDirArg;
use crate::admin::{CALL_TIMEOUT, check, open_client, unexpected};
use crate::datadir::DataDir;

/// Arguments of `certs`.
#[derive(clap::Args)]
pub struct CertsArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The hub's address (default: the one `serve` recorded in the data dir).
    #[arg(long)]
    hub: Option<String>,
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(clap::Subcommand)]
enum CertsCommand {
    /// The certificates the hub issued (renewals) or saw at a handshake.
    List {
        /// Only those naming this agent id or user name.
        name: Option<String>,
    },
    /// Revoke certificates: every one the hub knows for NAME, or one by --serial or --cert.
    /// A revoked certificate is refused at its next handshake; connections using it end now.
    Revoke {
        /// Agent id or user name.
        name: Option<String>,
        /// The serial (hex) of one certificate.
        #[arg(long)]
        serial: Option<String>,
        /// A certificate file (PEM) to revoke, even one the hub never saw.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Issue a new client certificate for a user (user certificates are renewed by hand).
    RenewUser {
        /// The user name.
        name: String,
        /// Directory to write `NAME.pem` and `NAME.key` into.
        #[arg(long)]
        out: PathBuf,
        /// Lifetime in days (at most 365).
        #[arg(long, default_value_t = pki::MAX_CLIENT_CERT_DAYS)]
        days: u32,
        /// Also revoke the user's previous certificates.
        #[arg(long)]
        revoke_old: bool,
    },
}

/// Runs a certs command.
pub fn run(args: CertsArgs) -> io::Result<ExitCode> {
    let data = DataDir::open(&args.data.path())?;
    smol::block_on(async move {
        let mut client = open_client(&data, args.hub.as_deref(), true).await?;
        match args.command {
            CertsCommand::List { name } => {
                println!("{:<24} {:<34} {:<12} revoked", "name", "serial", "expires");
                let (mut after_name, mut after_serial) = (String::new(), String::new());
                loop {
                    let rid = client.request_id();
                    let req = pb::ListCertificatesRequest {
                        request_id: rid,
                        name: name.clone().unwrap_or_default(),
                        after_name: after_name.clone(),
                        after_serial: after_serial.clone(),
                    };
                    let Body::ListCertificatesResponse(r) = check(
                        client
                            .call(rid, Body::ListCertificatesRequest(req), CALL_TIMEOUT)
                            .await?,
                    )?
                    else {
                        return Err(unexpected());
                    };
                    for c in &r.certificates {
                        println!(
                            "{:<24} {:<34} {:<12} {}",
                            c.name,
                            c.serial,
                            date(c.not_after_unix_ms),
                            if c.revoked_unix_ms == 0 {
                                "-".to_string()
                            } else {
                                date(c.revoked_unix_ms)
                            }
                        );
                    }
                    match r.certificates.last() {
                        Some(last) if r.more => {
                            after_name = last.name.clone();
                            after_serial = last.serial.clone();
                        }
                        _ => break,
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            CertsCommand::Revoke { name, serial, cert } => {
                let (name, serial) = match (name, serial, cert) {
                    (name, None, Some(file)) => {
                        let pem = std::fs::read_to_string(&file).map_err(|e| {
                            io::Error::new(e.kind(), format!("{}: {e}", file.display()))
                        })?;
                        let id = pki::IssuedCert {
                            cert_pem: pem,
                            key_pem: String::new(),
                        }
                        .identity()
                        .map_err(io::Error::other)?;
                        (name.or(id.common_name).unwrap_or_default(), id.serial)
                    }
                    (Some(name), serial, None) => (name, serial.unwrap_or_default()),
                    (None, Some(serial), None) => (String::new(), serial),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "give NAME, --serial HEX, or --cert FILE",
                        ));
                    }
                };
                let serials = revoke(&mut client, name, serial).await?;
                for s in &serials {
                    println!("revoked {s}");
                }
                if serials.is_empty() {
                    println!("nothing new to revoke");
                }
                Ok(ExitCode::SUCCESS)
            }
            CertsCommand::RenewUser {
                name,
                out,
                days,
                revoke_old,
            } => {
                if revoke_old {
                    match revoke(&mut client, name.clone(), String::new()).await {
                        Ok(serials) => {
                            for s in serials {
                                println!("revoked {s}");
                            }
                        }
                        Err(e) if e.to_string().contains("NOT_FOUND") => {}
                        Err(e) => return Err(e),
                    }
                }
                let cert = data
                    .pki
                    .ca
                    .issue_client(&name, days)
                    .map_err(io::Error::other)?;
                std::fs::create_dir_all(&out)?;
                cert.write_to(&out, &format!("{name}.pem"), &format!("{name}.key"))
                    .map_err(io::Error::other)?;
                let id = cert.identity().map_err(io::Error::other)?;
                println!(
                    "issued a certificate for {name} (serial {}, expires {}): {}",
                    id.serial,
                    date(id.not_after_unix * 1000),
                    out.join(format!("{name}.pem")).display()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn revoke(
    client: &mut switchboard_runtime_smol::client::AdminClient,
    name: String,
    serial: String,
) -> io::Result<Vec<String>> {
    let rid = client.request_id();
    let req = pb::RevokeCertificateRequest {
        request_id: rid,
        name,
        serial,
    };
    match check(
        client
            .call(rid, Body::RevokeCertificateRequest(req), CALL_TIMEOUT)
            .await?,
    )? {
        Body::RevokeCertificateResponse(r) => Ok(r.serials),
        _ => Err(unexpected()),
    }
}

/// YYYY-MM-DD of Unix ms (UTC), or "-" for 0.
fn date(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "-");
        assert_eq!(super::date(1), "1970-01-01");
        assert_eq!(super::date(951_782_400_000), "2000-02-29");
        assert_eq!(super::date(1_795_305_600_000), "2026-11-22");
    }
}
