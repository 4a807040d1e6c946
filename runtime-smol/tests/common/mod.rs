//! A hub on loopback with real TLS and short timers, agents and an operator around it.
#![allow(dead_code, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use switchboard_core::hub::HubEvent;
use switchboard_core::link::{AgentConfig, Backoff, LinkConfig};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::agent::{AgentOptions, AgentStatus, RenewalFiles, run_agent};
use switchboard_runtime_smol::client::AdminClient;
use switchboard_runtime_smol::pki::{Ca, IssuedCert};
use switchboard_runtime_smol::server::{HubServer, ServerOptions};
use switchboard_runtime_smol::store::SqliteStore;
use switchboard_runtime_smol::{secret, tls};

/// Short timers so that timeouts are quick to observe.
pub fn link() -> LinkConfig {
    LinkConfig {
        hello_timeout: Duration::from_secs(2),
        ping_interval: Duration::from_secs(1),
        ping_timeout: Duration::from_secs(1),
        ..LinkConfig::default()
    }
}

/// Certificates of a test hub.
pub struct Pki {
    pub ca: Ca,
    pub hub: IssuedCert,
    pub admin: IssuedCert,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = Ca::generate("test CA").expect("ca");
        let hub = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
            .expect("hub");
        let admin = ca.issue_client("admin", 30).expect("admin");
        Pki { ca, hub, admin }
    }

    pub fn client_tls(&self, cert: &IssuedCert) -> Arc<rustls::ClientConfig> {
        tls::client_config(
            self.ca.cert_pem().as_bytes(),
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
        )
        .expect("client tls")
    }
}

/// A running hub and what the tests need to reach it.
pub struct Rig {
    pub pki: Pki,
    pub addr: SocketAddr,
    pub events: Receiver<HubEvent>,
    pub server: Option<HubServer>,
    pub db: std::path::PathBuf,
    pub _dir: Option<tempfile::TempDir>,
}

impl Rig {
    pub async fn start() -> Rig {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("hub.sqlite");
        let mut rig = Rig::start_on(Pki::new(), db).await;
        rig._dir = Some(dir);
        rig
    }

    pub async fn start_on(pki: Pki, db: std::path::PathBuf) -> Rig {
        let tls = tls::server_config(
            pki.ca.cert_pem().as_bytes(),
            pki.hub.cert_pem.as_bytes(),
            pki.hub.key_pem.as_bytes(),
        )
        .expect("server tls");
        let mut opts = ServerOptions::new(tls, 11);
        opts.hub.link = link();
        let ca = Ca::load(pki.ca.cert_pem(), &pki.ca.key_pem()).expect("ca");
        opts.ca = Some(Arc::new(ca));
        opts.tls_handshake_timeout = Duration::from_secs(2);
        let listener = async_net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (tx, events) = async_channel::bounded(10_000);
        let store = SqliteStore::open(&db).expect("store");
        let server = HubServer::start(opts, store, listener, Some(tx)).expect("start");
        Rig {
            addr: server.local_addr,
            pki,
            events,
            server: Some(server),
            db,
            _dir: None,
        }
    }

    pub async fn admin(&self) -> AdminClient {
        AdminClient::connect(
            &self.addr.to_string(),
            "localhost",
            self.pki.client_tls(&self.pki.admin),
        )
        .await
        .expect("admin")
    }

    /// Registers an agent with a cheap hash; returns its certificate and secret.
    pub async fn register(&self, admin: &mut AdminClient, id: &str) -> (IssuedCert, String) {
        let secret_text = format!("secret-of-{id}");
        let hash = secret::hash_secret(&secret_text, secret::cheap_params()).expect("hash");
        let rid = admin.request_id();
        let req = pb::RegisterAgentRequest {
            request_id: rid,
            agent_id: id.into(),
            secret_hash: hash,
            allowed_networks: vec![],
        };
        let resp = admin
            .call(
                rid,
                Body::RegisterAgentRequest(req),
                Duration::from_secs(10),
            )
            .await
            .expect("register");
        assert!(matches!(resp, Body::RegisterAgentResponse(_)), "{resp:?}");
        (self.pki.ca.issue_client(id, 30).expect("cert"), secret_text)
    }

    /// Starts a real agent; returns its stop sender and status receiver.
    pub fn spawn_agent(
        &self,
        id: &str,
        cert: &IssuedCert,
        secret: &str,
    ) -> (Sender<()>, Receiver<AgentStatus>) {
        self.spawn_agent_renewing(id, cert, secret, None)
    }

    /// [`Rig::spawn_agent`], renewing its certificate in `renewal`'s files if given.
    pub fn spawn_agent_renewing(
        &self,
        id: &str,
        cert: &IssuedCert,
        secret: &str,
        renewal: Option<RenewalFiles>,
    ) -> (Sender<()>, Receiver<AgentStatus>) {
        let opts = AgentOptions {
            manager: self.addr.to_string(),
            server_name: "localhost".into(),
            tls: self.pki.client_tls(cert),
            agent: AgentConfig {
                agent_id: id.into(),
                secret: secret.into(),
                link: link(),
            },
            backoff: Backoff::new(
                Duration::from_millis(200),
                Duration::from_secs(2),
                Duration::from_secs(30),
            ),
            seed: 5,
            connect_timeout: Duration::from_secs(5),
            renewal,
            streams: Some(switchboard_runtime_smol::sources::SourceOptions {
                tail_dirs: vec![std::env::temp_dir()],
                shell: true,
                ..Default::default()
            }),
        };
        let (stop_tx, stop_rx) = async_channel::bounded(1);
        let (status_tx, status_rx) = async_channel::unbounded();
        smol::spawn(run_agent(opts, stop_rx, Some(status_tx))).detach();
        (stop_tx, status_rx)
    }

    /// Waits (bounded) for an event matching `f`.
    pub async fn event(&self, what: &str, f: impl Fn(&HubEvent) -> bool) -> HubEvent {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let next = futures_lite::future::or(async { self.events.recv().await.ok() }, async {
                async_io::Timer::at(until).await;
                None
            })
            .await;
            match next {
                Some(e) if f(&e) => return e,
                Some(_) => {}
                None => panic!("no {what} event within 15 s"),
            }
        }
    }

    /// Runs echo.Echo on `agent` through a fresh operator session (a session left unread
    /// while a test waits elsewhere would miss the hub's pings and be closed, rightly).
    pub async fn echo(&self, agent: &str, text: &str) {
        let mut admin = self.admin().await;
        echo(&mut admin, agent, text).await;
        let _ = admin.close().await;
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("shutdown");
        }
    }
}

/// Runs echo.Echo on `agent` through `admin` and checks the answer.
pub async fn echo(admin: &mut AdminClient, agent: &str, text: &str) {
    let rid = admin.request_id();
    let req = pb::RunCommandRequest {
        request_id: rid,
        agent_id: agent.into(),
        operation: "echo.Echo".into(),
        data: serde_json::json!({"[args]": [text]}).to_string(),
    };
    let resp = admin
        .call(rid, Body::RunCommandRequest(req), Duration::from_secs(10))
        .await
        .expect("run");
    let Body::RunCommandResponse(r) = resp else {
        panic!("run refused: {resp:?}")
    };
    let result = wait_result(admin, r.command_id).await;
    assert_eq!(
        result.status,
        pb::command_result::Status::Success as i32,
        "{result:?}"
    );
    assert!(result.output.contains(text), "{result:?}");
}

/// Waits for the result (or done) of a command.
pub async fn wait_result(admin: &mut AdminClient, id: i64) -> pb::CommandResult {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let m = futures_lite::future::or(async { Some(admin.next_message().await) }, async {
            async_io::Timer::at(until).await;
            None
        })
        .await
        .unwrap_or_else(|| panic!("no result for command {id} within 20 s"))
        .expect("session");
        match m {
            Body::Result(r) if r.command_id == id => return r,
            Body::Done(d) if d.command_id == id => {
                return pb::CommandResult {
                    command_id: d.command_id,
                    status: d.status,
                    changed: d.changed,
                    output: d.output,
                };
            }
            _ => {}
        }
    }
}

/// Waits for the agent to report Connected.
pub async fn connected(status: &Receiver<AgentStatus>) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let s = futures_lite::future::or(async { status.recv().await.ok() }, async {
            async_io::Timer::at(until).await;
            None
        })
        .await
        .expect("agent did not connect within 15 s");
        if s == AgentStatus::Connected {
            return;
        }
    }
}
