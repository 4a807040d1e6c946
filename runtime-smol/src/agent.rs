//! The Switchboard agent on smol: connects to a manager (a Switchboard hub or a real RedPepper
//! 0.0.x manager) over mutual TLS, drives the core [`AgentLink`], runs operations as tasks, and
//! reconnects with the core [`Backoff`] policy.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_rustls::TlsConnector;
use rustls_pki_types::ServerName;
use switchboard_core::link::{
    AgentConfig, AgentEvent, AgentLink, Backoff, CommandStatusWire, RequestError,
};
use switchboard_core::machine::{Action, CloseReason};
use switchboard_core::rng;

use crate::client::with_timeout;
use crate::operations::{self, DataRequester, OperationRequest, Outcome, OutcomeStatus, Progress};

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
    loop {
        let reason = match connect(&opts).await {
            Ok(tls) => {
                run_connection(
                    &opts,
                    tls,
                    &mut backoff,
                    rng::child_seed(&mut rng),
                    &stop,
                    status.as_ref(),
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

async fn connect(opts: &AgentOptions) -> io::Result<futures_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(opts.server_name.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let connector = TlsConnector::from(opts.tls.clone());
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
) -> String {
    let mut link = AgentLink::new(Instant::now(), opts.agent.clone(), seed);
    let (work_tx, work_rx) = async_channel::unbounded::<WorkerMsg>();
    let requester: Arc<dyn DataRequester> = Arc::new(LinkRequester {
        tx: work_tx.clone(),
    });
    // Running commands: their cancel senders.
    let running: Arc<Mutex<HashMap<i64, Sender<()>>>> = Arc::default();
    let mut waiting: HashMap<i64, Sender<Result<String, String>>> = HashMap::new();
    let mut buf = vec![0u8; 16 * 1024];
    let reason = 'conn: loop {
        // 1. Perform what the link asks.
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
                            tracing::debug!(command_id, "cancel for a command that is not running")
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
            }
        }
        // 2. Wait for bytes, a worker message, the timer, or stop.
        enum Wake {
            Read(io::Result<usize>),
            Work(WorkerMsg),
            Timer,
            Stop,
        }
        let deadline = link.poll_timeout();
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
            read.or(work).or(timer).or(stopping).await
        };
        let now = Instant::now();
        match wake {
            Wake::Read(Ok(0)) => link.handle_transport_closed("EOF"),
            Wake::Read(Ok(n)) => link.handle_input(now, &buf[..n]),
            Wake::Read(Err(e)) => link.handle_transport_closed(&e.to_string()),
            Wake::Timer => link.handle_timeout(now),
            Wake::Stop => link.close("agent shutting down"),
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
    // The connection is gone: running commands can no longer report. Cancel them (kills
    // processes); the manager already counts them as failed.
    for (_, cancel) in lock(&running).drain() {
        let _ = cancel.try_send(());
    }
    for (_, reply) in waiting.drain() {
        let _ = reply.try_send(Err("connection closed".into()));
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
