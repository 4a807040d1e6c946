//! `switchboard admin`: operator commands over the native protocol with the admin certificate.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchboard_core::perm::Permissions;
use switchboard_proto as pb;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::client::AdminClient;
use switchboard_runtime_smol::pki;
use switchboard_runtime_smol::secret;

use crate::DataDirArg;
use crate::datadir::DataDir;

/// How long a control request may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `admin`.
#[derive(clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The hub's address (default: the one `serve` recorded in the data dir).
    #[arg(long)]
    hub: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand)]
enum AdminCommand {
    /// Register an agent and write its credentials (ca.pem, agent.pem, agent.key, secret).
    EnrollAgent {
        /// The agent id (bound into its certificate).
        id: String,
        /// Directory to write the credentials into.
        #[arg(long)]
        out: PathBuf,
        /// Networks the agent may connect from (CIDR; repeatable; default anywhere).
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// Certificate lifetime in days (at most 365).
        #[arg(long, default_value_t = pki::MAX_CLIENT_CERT_DAYS)]
        days: u32,
    },
    /// List agents with connected / last seen.
    Agents,
    /// Remove an agent (disconnects it).
    RemoveAgent {
        /// The agent id.
        id: String,
    },
    /// Set a named value that the agent can fetch with a `data` request (data.Show NAME).
    SetData {
        /// The agent id.
        #[arg(long)]
        agent: String,
        /// Value name.
        name: String,
        /// JSON value (a bare word is taken as a string).
        value: String,
    },
    /// Run an operation on an agent and follow it; Ctrl-C cancels.
    Run {
        /// The agent id.
        #[arg(long)]
        agent: String,
        /// Operation, e.g. echo.Echo, command.Run, data.Show.
        operation: String,
        /// Command data as the real peers carry it: `{"[args]": [...], "keyword": value}`.
        #[arg(default_value = "{}")]
        json_args: String,
    },
    /// Log in as a user with password + TOTP; later admin commands use the session (cookie in
    /// the data dir) until it expires. Prompts for what is not given.
    Login {
        /// User name.
        #[arg(long)]
        user: String,
        /// Password (prompted when absent).
        #[arg(long)]
        password: Option<String>,
        /// The authenticator's current code (prompted when absent).
        #[arg(long)]
        totp: Option<u32>,
    },
    /// Users: list them, or `users add NAME --perms ...`, or `users remove UID`.
    Users {
        #[command(subcommand)]
        action: Option<UsersAction>,
    },
    /// Channels with owner, UDP port and members.
    Channels,
    /// Secure-feed clients: `feed-clients add ID --public-key FILE [--user NAME]`, `list`,
    /// `remove ID`.
    FeedClients {
        #[command(subcommand)]
        action: crate::feed_clients::FeedClientsAction,
    },
    /// The newest entries of the command log (read from the database).
    Commands {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(clap::Subcommand)]
enum UsersAction {
    /// Register a user; prints its uid alone on the last line.
    Add {
        /// Name.
        name: String,
        /// Comma-separated permissions: add_channel, rm_channel, add_user, kick_user,
        /// register_user, delete_user, run_command, manage_agents, open_stream, or admin.
        #[arg(long, default_value = "")]
        perms: String,
    },
    /// Unregister a user.
    Remove {
        /// The uid.
        uid: u64,
    },
}

/// Runs an admin command.
pub fn run(args: AdminArgs) -> io::Result<ExitCode> {
    let data = DataDir::open(&args.data.path())?;
    if let AdminCommand::Commands { limit } = &args.command {
        let store = data.store()?;
        for c in store.list_commands(*limit).map_err(io::Error::other)? {
            println!(
                "{:>8}  {:<12} {:<16} {:<10} {}",
                c.command_id,
                c.agent_id,
                c.operation,
                c.status.as_str(),
                c.output.lines().next().unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    smol::block_on(async move {
        let cookie_file = data.dir.join(SESSION_FILE);
        let mut client = open_client(
            &data,
            args.hub.as_deref(),
            !matches!(args.command, AdminCommand::Login { .. }),
        )
        .await?;
        let code = match args.command {
            AdminCommand::Login {
                user,
                password,
                totp,
            } => login(&mut client, &cookie_file, user, password, totp).await?,
            AdminCommand::EnrollAgent {
                id,
                out,
                allow,
                days,
            } => {
                enroll_agent(&mut client, &data, &id, &out, allow, days).await?;
                ExitCode::SUCCESS
            }
            AdminCommand::Agents => {
                println!(
                    "{:<24} {:<10} {:<24} last seen",
                    "agent", "state", "address"
                );
                let mut after = String::new();
                loop {
                    let id = client.request_id();
                    let req = pb::ListAgentsRequest {
                        request_id: id,
                        after: after.clone(),
                        limit: 0,
                    };
                    let resp = client
                        .call(id, Body::ListAgentsRequest(req), CALL_TIMEOUT)
                        .await?;
                    let Body::ListAgentsResponse(r) = check(resp)? else {
                        return Err(unexpected());
                    };
                    for a in &r.agents {
                        let state = if a.connected { "connected" } else { "offline" };
                        println!(
                            "{:<24} {:<10} {:<24} {}",
                            a.agent_id,
                            state,
                            a.address,
                            format_unix_ms(a.last_seen_unix_ms)
                        );
                    }
                    match r.agents.last() {
                        Some(last) if r.more => after = last.agent_id.clone(),
                        _ => break,
                    }
                }
                ExitCode::SUCCESS
            }
            AdminCommand::RemoveAgent { id } => {
                let rid = client.request_id();
                let resp = client
                    .call(
                        rid,
                        Body::RemoveAgentRequest(pb::RemoveAgentRequest {
                            request_id: rid,
                            agent_id: id.clone(),
                        }),
                        CALL_TIMEOUT,
                    )
                    .await?;
                check(resp)?;
                println!("removed {id}");
                ExitCode::SUCCESS
            }
            AdminCommand::SetData { agent, name, value } => {
                let value_json = if serde_json::from_str::<serde_json::Value>(&value).is_ok() {
                    value
                } else {
                    serde_json::Value::String(value).to_string()
                };
                let rid = client.request_id();
                let req = pb::SetAgentDataRequest {
                    request_id: rid,
                    agent_id: agent,
                    name,
                    value_json,
                };
                check(
                    client
                        .call(rid, Body::SetAgentDataRequest(req), CALL_TIMEOUT)
                        .await?,
                )?;
                ExitCode::SUCCESS
            }
            AdminCommand::Users { action: None } => {
                println!("{:>10}  {:<24} permissions", "uid", "name");
                let mut after = 0;
                loop {
                    let rid = client.request_id();
                    let req = pb::ListUsersRequest {
                        request_id: rid,
                        after_uid: after,
                    };
                    let Body::ListUsersResponse(r) = check(
                        client
                            .call(rid, Body::ListUsersRequest(req), CALL_TIMEOUT)
                            .await?,
                    )?
                    else {
                        return Err(unexpected());
                    };
                    for u in &r.users {
                        println!(
                            "{:>10}  {:<24} {}",
                            u.uid,
                            u.name,
                            Permissions(u.permissions)
                        );
                    }
                    match r.users.last() {
                        Some(last) if r.more => after = last.uid,
                        _ => break,
                    }
                }
                ExitCode::SUCCESS
            }
            AdminCommand::Users {
                action: Some(UsersAction::Add { name, perms }),
            } => {
                let permissions = Permissions::parse_list(&perms)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let rid = client.request_id();
                let req = pb::RegisterUserRequest {
                    request_id: rid,
                    name: name.clone(),
                    permissions: permissions.0,
                };
                let Body::RegisterUserResponse(r) = check(
                    client
                        .call(rid, Body::RegisterUserRequest(req), CALL_TIMEOUT)
                        .await?,
                )?
                else {
                    return Err(unexpected());
                };
                eprintln!(
                    "registered {name} with {permissions}; KV control key {}",
                    r.control_key
                );
                println!("{}", r.uid);
                ExitCode::SUCCESS
            }
            AdminCommand::Users {
                action: Some(UsersAction::Remove { uid }),
            } => {
                let rid = client.request_id();
                check(
                    client
                        .call(
                            rid,
                            Body::RemoveUserRequest(pb::RemoveUserRequest {
                                request_id: rid,
                                uid,
                            }),
                            CALL_TIMEOUT,
                        )
                        .await?,
                )?;
                println!("removed user {uid}");
                ExitCode::SUCCESS
            }
            AdminCommand::Channels => {
                println!("{:>10}  {:>10}  {:>6}  members", "channel", "owner", "port");
                let mut after = 0;
                loop {
                    let rid = client.request_id();
                    let req = pb::ListChannelsRequest {
                        request_id: rid,
                        after_chid: after,
                    };
                    let Body::ListChannelsResponse(r) = check(
                        client
                            .call(rid, Body::ListChannelsRequest(req), CALL_TIMEOUT)
                            .await?,
                    )?
                    else {
                        return Err(unexpected());
                    };
                    for c in &r.channels {
                        let members: Vec<String> = c.members.iter().map(u64::to_string).collect();
                        println!(
                            "{:>10}  {:>10}  {:>6}  {}",
                            c.chid,
                            c.owner,
                            c.port,
                            members.join(",")
                        );
                    }
                    match r.channels.last() {
                        Some(last) if r.more => after = last.chid,
                        _ => break,
                    }
                }
                ExitCode::SUCCESS
            }
            AdminCommand::Run {
                agent,
                operation,
                json_args,
            } => run_command(&mut client, agent, operation, json_args).await?,
            AdminCommand::FeedClients { action } => {
                crate::feed_clients::run(&mut client, action).await?
            }
            AdminCommand::Commands { .. } => ExitCode::SUCCESS,
        };
        let _ = client.close().await;
        Ok(code)
    })
}

/// A response of the wrong kind.
pub(crate) fn unexpected() -> io::Error {
    io::Error::other("unexpected answer from the hub")
}

/// Turns a ControlError into an error.
pub fn check(resp: Body) -> io::Result<Body> {
    match resp {
        Body::ControlError(e) => {
            let code = pb::control_error::Code::try_from(e.code)
                .map(|c| c.as_str_name())
                .unwrap_or("UNKNOWN");
            Err(io::Error::other(format!(
                "hub refused: {code}: {}",
                e.message
            )))
        }
        other => Ok(other),
    }
}

/// "never" or "N s ago".
pub(crate) fn format_unix_ms(ms: i64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let now = switchboard_runtime_smol::server::unix_ms_now();
    let ago = (now - ms).max(0) / 1000;
    format!("{ago} s ago")
}

/// Connects to the hub with the admin certificate and, if `resume`, resumes the logged-in
/// session kept in the data dir (if any).
pub async fn open_client(
    data: &DataDir,
    hub: Option<&str>,
    resume: bool,
) -> io::Result<AdminClient> {
    let addr = data.hub_addr(hub)?;
    let mut client = AdminClient::connect(&addr, "localhost", data.admin_tls()?).await?;
    if resume {
        resume_session(&mut client, &data.dir.join(SESSION_FILE)).await?;
    }
    Ok(client)
}

/// Registers an agent with the hub and writes its credentials.
pub async fn enroll_agent(
    client: &mut AdminClient,
    data: &DataDir,
    id: &str,
    out: &std::path::Path,
    allow: Vec<String>,
    days: u32,
) -> io::Result<()> {
    enroll_agent_with(client, data, id, out, allow, days, secret::default_params()).await
}

/// [`enroll_agent`] with chosen argon2 parameters (cheap ones only for synthetic agents).
pub async fn enroll_agent_with(
    client: &mut AdminClient,
    data: &DataDir,
    id: &str,
    out: &std::path::Path,
    allow: Vec<String>,
    days: u32,
    params: argon2::Params,
) -> io::Result<()> {
    let secret_text = secret::generate_secret();
    let hash = {
        let s = secret_text.clone();
        smol::unblock(move || secret::hash_secret(&s, params))
            .await
            .map_err(io::Error::other)?
    };
    let cert = data
        .pki
        .ca
        .issue_client(id, days.min(pki::MAX_CLIENT_CERT_DAYS))
        .map_err(io::Error::other)?;
    let rid = client.request_id();
    let req = pb::RegisterAgentRequest {
        request_id: rid,
        agent_id: id.into(),
        secret_hash: hash,
        allowed_networks: allow,
    };
    check(
        client
            .call(rid, Body::RegisterAgentRequest(req), CALL_TIMEOUT)
            .await?,
    )?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("ca.pem"), data.pki.ca.cert_pem())?;
    cert.write_to(out, "agent.pem", "agent.key")
        .map_err(io::Error::other)?;
    write_private(&out.join("secret"), &secret_text)?;
    println!("enrolled agent {id}: credentials in {}", out.display());
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Runs a command and follows it to its end. Exit status 0 only on success.
async fn run_command(
    client: &mut AdminClient,
    agent: String,
    operation: String,
    data: String,
) -> io::Result<ExitCode> {
    if !serde_json::from_str::<serde_json::Value>(&data).is_ok_and(|v| v.is_object()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "JSON-ARGS must be a JSON object",
        ));
    }
    let rid = client.request_id();
    let req = pb::RunCommandRequest {
        request_id: rid,
        agent_id: agent.clone(),
        operation: operation.clone(),
        data,
    };
    let Body::RunCommandResponse(r) = check(
        client
            .call(rid, Body::RunCommandRequest(req), CALL_TIMEOUT)
            .await?,
    )?
    else {
        return Err(unexpected());
    };
    let id = r.command_id;
    eprintln!("command {id}: {operation} on {agent}");
    let (int_tx, int_rx) = async_channel::bounded::<()>(4);
    let _ = ctrlc::set_handler(move || {
        let _ = int_tx.try_send(());
    });
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut cancel_sent = false;
    loop {
        enum Next {
            Msg(io::Result<Body>),
            Interrupt,
        }
        let next =
            futures_lite::future::or(async { Next::Msg(client.next_message().await) }, async {
                let _ = int_rx.recv().await;
                Next::Interrupt
            })
            .await;
        match next {
            Next::Interrupt if !cancel_sent => {
                bar.println("cancelling...");
                client
                    .send(Body::Cancel(pb::CommandCancel { command_id: id }))
                    .await?;
                cancel_sent = true;
            }
            Next::Interrupt => {
                bar.finish_and_clear();
                eprintln!("command {id}: interrupted again, not waiting for the agent");
                return Ok(ExitCode::from(130));
            }
            Next::Msg(m) => match m? {
                Body::Progress(p) if p.command_id == id => {
                    if p.total > 0 {
                        bar.set_message(format!("[{}/{}] {}", p.current, p.total, p.message));
                    } else {
                        bar.set_message(p.message);
                    }
                }
                Body::Result(r) if r.command_id == id => {
                    return Ok(finish(&bar, id, r.status, &r.output, false));
                }
                Body::Done(d) if d.command_id == id => {
                    return Ok(finish(&bar, id, d.status, &d.output, true));
                }
                Body::ControlError(e) => bar.println(format!("hub: {}", e.message)),
                _ => {}
            },
        }
    }
}

fn finish(
    bar: &indicatif::ProgressBar,
    id: i64,
    status: i32,
    output: &str,
    done: bool,
) -> ExitCode {
    bar.finish_and_clear();
    let status = Status::try_from(status).unwrap_or(Status::Unspecified);
    println!("{output}");
    let what = if done { "done" } else { "result" };
    eprintln!("command {id}: {what}: {}", status.as_str_name());
    if status == Status::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Where `admin login` keeps its cookie.
const SESSION_FILE: &str = "session.cookie";

fn prompt(what: &str) -> io::Result<String> {
    use std::io::BufRead;
    eprint!("{what}: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

async fn login(
    client: &mut AdminClient,
    cookie_file: &std::path::Path,
    user: String,
    password: Option<String>,
    totp: Option<u32>,
) -> io::Result<ExitCode> {
    let password = match password {
        Some(p) => p,
        None => prompt("password")?,
    };
    let totp = match totp {
        Some(t) => t,
        None => prompt("TOTP code")?.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "the TOTP code is 6 digits")
        })?,
    };
    let rid = client.request_id();
    let req = pb::LoginRequest {
        request_id: rid,
        username: user.clone(),
        password,
        totp,
    };
    let Body::LoginResponse(r) = check(
        client
            .call(rid, Body::LoginRequest(req), CALL_TIMEOUT)
            .await?,
    )?
    else {
        return Err(unexpected());
    };
    let result = pb::login_response::Result::try_from(r.result)
        .unwrap_or(pb::login_response::Result::Failed);
    if result != pb::login_response::Result::Ok {
        eprintln!("login refused: {}", result.as_str_name());
        return Ok(ExitCode::from(2));
    }
    write_private(cookie_file, &r.cookie)?;
    println!("logged in as {user}; the session lasts 15 minutes after each use");
    Ok(ExitCode::SUCCESS)
}

/// Acts as the logged-in user if `admin login` left a live session (and renews it).
async fn resume_session(client: &mut AdminClient, cookie_file: &std::path::Path) -> io::Result<()> {
    let Ok(cookie) = std::fs::read_to_string(cookie_file) else {
        return Ok(());
    };
    let rid = client.request_id();
    let req = pb::RenewSessionRequest {
        request_id: rid,
        cookie: cookie.trim().to_string(),
    };
    match client
        .call(rid, Body::RenewSessionRequest(req), CALL_TIMEOUT)
        .await?
    {
        Body::RenewSessionResponse(r) if r.ok => {
            client.user = r.user;
            Ok(())
        }
        _ => {
            let _ = std::fs::remove_file(cookie_file);
            eprintln!(
                "the login session expired; acting as the certificate's user ({})",
                client.user
            );
            Ok(())
        }
    }
}
