//! The Switchboard agent on smol: connects to a manager (a Switchboard hub or a real RedPepper
//! 0.0.x manager) over mutual TLS, drives the core [`AgentLink`], runs operations as tasks, and
//! reconnects with the core [`Backoff`] policy.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_rustls::TlsConnector;
use rustls_pki_types::ServerName;
use switchboard_core::link::{
    AgentConfig, AgentEvent, AgentLink, Backoff, CertRenewal, CommandStatusWire, RequestError,
};
use switchboard_core::machine::{Action, CloseReason};
use switchboard_core::rng;

use crate::client::with_timeout;
use crate::operations::{self, DataRequester, OperationRequest, Outcome, OutcomeStatus, Progress};
use crate::pki;
use crate::server::unix_ms_now;
use crate::sources::SourceMsg;
use crate::sources::conn::AgentStreams;

/// How an agent runs.
#[derive(Clone)]
pub struct AgentOptions {
    /// Manager address, `host:port`.
    pub manager: String,
    /// Name to verify the manager's certificate against (host name or IP).
    pub server_name: String,
    /// TLS client configuration (CA + our certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// Identity and link limits.
    pub agent: AgentConfig,
    /// The reconnect policy.
    pub backoff: Backoff,
    /// Seed for ping data and backoff jitter.
    pub seed: u64,
    /// Deadline of TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// Where the certificate lives, for automatic renewal at two thirds of its lifetime;
    /// `None` turns renewal off (a RedPepper 0.0.x manager does not know it).
    pub renewal: Option<RenewalFiles>,
    /// Stream sources offered (`None`: the agent does not announce streams, as a RedPepper
    /// 0.0.x agent).
    pub streams: Option<crate::sources::SourceOptions>,
}

/// The files of an agent's identity, rewritten when its certificate is renewed.
#[derive(Debug, Clone)]
pub struct RenewalFiles {
    /// The CA that signed the manager's certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// The agent's certificate (PEM), replaced on renewal.
    pub cert_path: PathBuf,
    /// The agent's private key (PEM), replaced on renewal.
    pub key_path: PathBuf,
}

/// Renewal state of a running agent: its files, its schedule, the TLS configuration in use.
struct Renewer {
    files: RenewalFiles,
    schedule: CertRenewal,
    tls: Arc<rustls::ClientConfig>,
    /// The key of the request in flight.
    pending_key: Option<String>,
}

impl Renewer {
    /// Finishes an interrupted install, then reads the certificate's validity.
    fn load(files: RenewalFiles) -> io::Result<Renewer> {
        let err = |e: pki::PkiError| io::Error::other(e.to_string());
        if pki::recover_renewal(&files.cert_path, &files.key_path).map_err(err)? {
            tracing::info!(cert = %files.cert_path.display(), "finished an interrupted certificate renewal");
        }
        let cert = std::fs::read(&files.cert_path)?;
        let key = std::fs::read(&files.key_path)?;
        let id = pki::IssuedCert {
            cert_pem: String::from_utf8_lossy(&cert).into_owned(),
            key_pem: String::new(),
        }
        .identity()
        .map_err(err)?;
        let tls =
            crate::tls::client_config(&files.ca_pem, &cert, &key).map_err(io::Error::other)?;
        Ok(Renewer {
            schedule: CertRenewal::new(id.not_before_unix * 1000, id.not_after_unix * 1000),
            files,
            tls,
            pending_key: None,
        })
    }

    /// Stores the renewed certificate durably, then uses it for the next connections.
    async fn install(&mut self, agent_id: &str, cert_pem: String) -> Result<i64, String> {
        let key_pem = self.pending_key.take().ok_or("no renewal in flight")?;
        let id = pki::IssuedCert {
            cert_pem: cert_pem.clone(),
            key_pem: String::new(),
        }
        .identity()
        .map_err(|e| e.to_string())?;
        if id.common_name.as_deref() != Some(agent_id) {
            return Err(format!("the new certificate names {:?}", id.common_name));
        }
        let tls =
            crate::tls::client_config(&self.files.ca_pem, cert_pem.as_bytes(), key_pem.as_bytes())
                .map_err(|e| e.to_string())?;
        let (cert_path, key_path) = (self.files.cert_path.clone(), self.files.key_path.clone());
        smol::unblock(move || pki::install_renewed(&cert_path, &key_path, &cert_pem, &key_pem))
            .await
            .map_err(|e| e.to_string())?;
        self.tls = tls;
        self.schedule
            .renewed(id.not_before_unix * 1000, id.not_after_unix * 1000);
        Ok(id.not_after_unix * 1000)
    }

    /// When to look again, as an instant.
    fn next_wake(&self) -> Option<Instant> {
        let at = self.schedule.next_check()?;
        let wait = at.saturating_sub(unix_ms_now()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }
}

/// What an agent reports to whoever runs it (the CLI logs these; tests and the demo watch).
#[derive(Debug, Clone, PartialEq)]
pub enum AgentStatus {
    /// Connected and welcomed by the manager.
    Connected,
    /// The connection ended; the next attempt is in `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Backoff delay before the next attempt.
        retry_in: Duration,
    },
    /// A command arrived.
    CommandStarted {
        /// Command id.
        command_id: i64,
        /// Operation.
        operation: String,
    },
    /// The certificate was renewed and stored; later connections use it.
    CertificateRenewed {
        /// Unix ms of the new certificate's expiry.
        not_after_unix_ms: i64,
    },
    /// A command ended (result sent, or CommandDone after a cancel).
    CommandFinished {
        /// Command id.
        command_id: i64,
        /// Its outcome.
        status: OutcomeStatus,
    },
}

enum WorkerMsg {
    Progress(i64, Progress),
    /// A key and certificate request generated for a renewal (or why not).
    Csr(Result<pki::KeyAndRequest, String>),
    Finished(i64, Outcome, bool),
    Request {
        name: String,
        kwargs: String,
        reply: Sender<Result<String, String>>,
    },
}

struct LinkRequester {
    tx: Sender<WorkerMsg>,
}

impl DataRequester for LinkRequester {
    fn request(
        &self,
        name: String,
        kwargs_json: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>> {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (reply, answer) = async_channel::bounded(1);
            tx.send(WorkerMsg::Request {
                name,
                kwargs: kwargs_json,
                reply,
            })
            .await
            .map_err(|_| "agent stopped".to_string())?;
            answer
                .recv()
                .await
                .map_err(|_| "connection closed".to_string())?
        })
    }
}

/// Runs the agent until the `stop` channel is closed (or all its senders dropped): the agent
/// then says Bye and returns. Each connection ends in a backoff delay before the next attempt,
/// clean close or not.
pub async fn run_agent(
    opts: AgentOptions,
    stop: Receiver<()>,
    status: Option<Sender<AgentStatus>>,
) {
    let mut rng = rng::seeded(opts.seed);
    let mut backoff = opts.backoff.clone();
    let mut renewer = match opts.renewal.clone().map(Renewer::load) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot read the certificate: renewal is off");
            None
        }
    };
    loop {
        let tls_config = renewer.as_ref().map_or(opts.tls.clone(), |r| r.tls.clone());
        let reason = match connect(&opts, tls_config).await {
            Ok(tls) => {
                run_connection(
                    &opts,
                    tls,
                    &mut backoff,
                    rng::child_seed(&mut rng),
                    &stop,
                    status.as_ref(),
                    renewer.as_mut(),
                )
                .await
            }
            Err(e) => format!("connect failed: {e}"),
        };
        if stop.is_closed() {
            return;
        }
        let delay = backoff.next_delay(Instant::now(), &mut rng);
        tracing::info!(%reason, retry_in = ?delay, "agent disconnected");
        report(
            status.as_ref(),
            AgentStatus::Disconnected {
                reason,
                retry_in: delay,
            },
        );
        let stopped = async {
            let _ = stop.recv().await;
            true
        };
        let slept = async {
            async_io::Timer::after(delay).await;
            false
        };
        if stopped.or(slept).await {
            return;
        }
    }
}

fn report(status: Option<&Sender<AgentStatus>>, s: AgentStatus) {
    if let Some(tx) = status {
        let _ = tx.try_send(s);
    }
}

async fn connect(
    opts: &AgentOptions,
    tls: Arc<rustls::ClientConfig>,
) -> io::Result<futures_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(opts.server_name.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let connector = TlsConnector::from(tls);
    with_timeout(opts.connect_timeout, "connect", async {
        let tcp = TcpStream::connect(opts.manager.as_str()).await?;
        let _ = tcp.set_nodelay(true);
        connector.connect(name, tcp).await
    })
    .await
}

/// Drives one connection; returns why it ended.
async fn run_connection(
    opts: &AgentOptions,
    mut tls: futures_rustls::client::TlsStream<TcpStream>,
    backoff: &mut Backoff,
    seed: u64,
    stop: &Receiver<()>,
    status: Option<&Sender<AgentStatus>>,
    mut renewer: Option<&mut Renewer>,
) -> String {
    let mut link = match &opts.streams {
        Some(_) => AgentLink::with_streams(Instant::now(), opts.agent.clone(), seed),
        None => AgentLink::new(Instant::now(), opts.agent.clone(), seed),
    };
    let mut streams = AgentStreams::new(opts.streams.clone().unwrap_or_default());
    let stream_rx = streams.receiver();
    let (work_tx, work_rx) = async_channel::unbounded::<WorkerMsg>();
    let requester: Arc<dyn DataRequester> = Arc::new(LinkRequester {
        tx: work_tx.clone(),
    });
    // Running commands: their cancel senders.
    let running: Arc<Mutex<HashMap<i64, Sender<()>>>> = Arc::default();
    let mut waiting: HashMap<i64, Sender<Result<String, String>>> = HashMap::new();
    let mut buf = vec![0u8; 16 * 1024];
    let reason = 'conn: loop {
        // 1. Perform what the link (and the streams beside it) ask.
        loop {
            while let Some(action) = link.poll_action() {
                match action {
                    Action::Send(bytes) => {
                        if let Err(e) = write_frame(&mut tls, &bytes).await {
                            link.handle_transport_closed(&e.to_string());
                        }
                    }
                    Action::Close(reason) => {
                        let _ = tls.close().await;
                        break 'conn reason.to_string();
                    }
                    Action::Timer(_) => {}
                    Action::Event(AgentEvent::Connected) => {
                        backoff.connected(Instant::now());
                        tracing::info!(manager = %opts.manager, "agent connected");
                        report(status, AgentStatus::Connected);
                    }
                    Action::Event(AgentEvent::Command {
                        command_id,
                        operation,
                        data,
                    }) => {
                        report(
                            status,
                            AgentStatus::CommandStarted {
                                command_id,
                                operation: operation.clone(),
                            },
                        );
                        spawn_command(command_id, operation, data, &work_tx, &requester, &running);
                    }
                    Action::Event(AgentEvent::Cancel { command_id }) => {
                        let cancel = lock(&running).get(&command_id).cloned();
                        match cancel {
                            Some(c) => {
                                let _ = c.try_send(());
                            }
                            None => {
                                tracing::debug!(
                                    command_id,
                                    "cancel for a command that is not running"
                                )
                            }
                        }
                    }
                    Action::Event(AgentEvent::Certificate { result, .. }) => {
                        let Some(r) = renewer.as_deref_mut() else {
                            continue;
                        };
                        let outcome = match result {
                            Ok((pem, _)) => r.install(&opts.agent.agent_id, pem).await,
                            Err(e) => Err(e.to_string()),
                        };
                        match outcome {
                            Ok(not_after_unix_ms) => {
                                tracing::info!(not_after_unix_ms, "certificate renewed and stored");
                                report(
                                    status,
                                    AgentStatus::CertificateRenewed { not_after_unix_ms },
                                );
                            }
                            Err(e) => {
                                r.pending_key = None;
                                r.schedule.failed(unix_ms_now());
                                tracing::warn!(error = %e, "certificate renewal failed; will retry");
                            }
                        }
                    }
                    Action::Event(AgentEvent::Response { request_id, result }) => {
                        if let Some(reply) = waiting.remove(&request_id) {
                            let _ = reply.try_send(result.map_err(|e| match e {
                                RequestError::Failed(t) => t,
                                other => other.to_string(),
                            }));
                        }
                    }
                    Action::Event(AgentEvent::Stream(body)) => {
                        streams.on_message(Instant::now(), body);
                    }
                }
            }
            if !streams.drain(&mut link) {
                break;
            }
        }
        // 2. Wait for bytes, a worker message, the timer, or stop.
        enum Wake {
            Read(io::Result<usize>),
            Work(WorkerMsg),
            Source(SourceMsg),
            Timer,
            Stop,
        }
        // A renewal is due: make a key and request off the loop; the request goes out when
        // they arrive (as a worker message).
        if link.is_established()
            && let Some(r) = renewer.as_deref_mut()
            && r.schedule.is_due(unix_ms_now())
        {
            r.schedule.started();
            let tx = work_tx.clone();
            let id = opts.agent.agent_id.clone();
            smol::spawn(async move {
                let made =
                    smol::unblock(move || pki::new_key_and_request(&id).map_err(|e| e.to_string()))
                        .await;
                let _ = tx.send(WorkerMsg::Csr(made)).await;
            })
            .detach();
        }
        let renew_wake = if link.is_established() {
            renewer.as_deref().and_then(Renewer::next_wake)
        } else {
            None
        };
        let deadline = match (link.poll_timeout(), renew_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wake = {
            let read = async { Wake::Read(tls.read(&mut buf).await) };
            let work = async {
                match work_rx.recv().await {
                    Ok(m) => Wake::Work(m),
                    Err(_) => std::future::pending().await,
                }
            };
            let timer = async {
                match deadline {
                    Some(d) => async_io::Timer::at(d).await,
                    None => std::future::pending().await,
                };
                Wake::Timer
            };
            let stopping = async {
                let _ = stop.recv().await;
                Wake::Stop
            };
            let source = async {
                match stream_rx.recv().await {
                    Ok(m) => Wake::Source(m),
                    Err(_) => std::future::pending().await,
                }
            };
            read.or(work).or(source).or(timer).or(stopping).await
        };
        let now = Instant::now();
        match wake {
            Wake::Read(Ok(0)) => link.handle_transport_closed("EOF"),
            Wake::Read(Ok(n)) => link.handle_input(now, &buf[..n]),
            Wake::Read(Err(e)) => link.handle_transport_closed(&e.to_string()),
            Wake::Timer => link.handle_timeout(now),
            Wake::Stop => link.close("agent shutting down"),
            Wake::Source(m) => streams.on_source(m),
            Wake::Work(WorkerMsg::Csr(made)) => {
                if let Some(r) = renewer.as_deref_mut() {
                    let sent = made.and_then(|kr| {
                        link.request_certificate(now, kr.csr_der)
                            .map_err(|e| e.to_string())?;
                        r.pending_key = Some(kr.key_pem);
                        Ok(())
                    });
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, "could not ask for a certificate renewal");
                        r.schedule.failed(unix_ms_now());
                    }
                }
            }
            Wake::Work(WorkerMsg::Progress(id, p)) => {
                let _ = link.progress(id, p.current, p.total, &p.message);
            }
            Wake::Work(WorkerMsg::Finished(id, outcome, cancelled)) => {
                lock(&running).remove(&id);
                let wire = match outcome.status {
                    OutcomeStatus::Success => CommandStatusWire::Success,
                    OutcomeStatus::Failed => CommandStatusWire::Failed,
                    OutcomeStatus::Cancelled => CommandStatusWire::Cancelled,
                };
                let sent = if cancelled {
                    link.done(id, wire, outcome.changed, &outcome.output)
                } else {
                    link.result(id, wire, outcome.changed, &outcome.output)
                };
                if sent.is_err() {
                    tracing::warn!(
                        command_id = id,
                        "command finished after the connection closed; result dropped"
                    );
                }
                report(
                    status,
                    AgentStatus::CommandFinished {
                        command_id: id,
                        status: outcome.status,
                    },
                );
            }
            Wake::Work(WorkerMsg::Request {
                name,
                kwargs,
                reply,
            }) => match link.request(now, &name, &kwargs) {
                Ok(id) => {
                    waiting.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.try_send(Err(e.to_string()));
                }
            },
        }
    };
    // The connection is gone: its streams stop (shells are killed).
    streams.stop_all();
    // The connection is gone: running commands can no longer report. Cancel them (kills
    // processes); the manager already counts them as failed.
    for (_, cancel) in lock(&running).drain() {
        let _ = cancel.try_send(());
    }
    for (_, reply) in waiting.drain() {
        let _ = reply.try_send(Err("connection closed".into()));
    }
    // A renewal cut short by the connection is tried again on the next one.
    if let Some(r) = renewer
        && r.schedule.next_check().is_none()
    {
        r.pending_key = None;
        r.schedule.failed(unix_ms_now());
    }
    if matches!(link.close_reason(), Some(CloseReason::AuthFailed(_))) {
        tracing::error!(%reason, "the manager refused this agent");
    }
    reason
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn write_frame(
    tls: &mut futures_rustls::client::TlsStream<TcpStream>,
    bytes: &[u8],
) -> io::Result<()> {
    tls.write_all(bytes).await?;
    tls.flush().await
}

fn spawn_command(
    command_id: i64,
    operation: String,
    data: String,
    work: &Sender<WorkerMsg>,
    requester: &Arc<dyn DataRequester>,
    running: &Arc<Mutex<HashMap<i64, Sender<()>>>>,
) {
    let (cancel_tx, cancel_rx) = async_channel::bounded::<()>(1);
    lock(running).insert(command_id, cancel_tx);
    let (progress_tx, progress_rx) = async_channel::unbounded::<Progress>();
    let work = work.clone();
    let requester = requester.clone();
    smol::spawn(async move {
        let forward = {
            let work = work.clone();
            async move {
                while let Ok(p) = progress_rx.recv().await {
                    let _ = work.send(WorkerMsg::Progress(command_id, p)).await;
                }
            }
        };
        let req = OperationRequest {
            command_id,
            operation,
            data_json: data,
        };
        let (outcome, ()) = futures_lite::future::zip(
            operations::run_operation(req, progress_tx, requester, cancel_rx),
            forward,
        )
        .await;
        let cancelled = outcome.status == OutcomeStatus::Cancelled;
        let _ = work
            .send(WorkerMsg::Finished(command_id, outcome, cancelled))
            .await;
    })
    .detach();
}
