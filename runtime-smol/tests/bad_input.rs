//! Bad input over real sockets and real TLS: each bad peer gets a clear Bye or close within its
//! deadline, and a well-behaved agent keeps working meanwhile.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_net::TcpStream;
use common::{Pki, Rig, connected};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_rustls::TlsConnector;
use rustls_pki_types::ServerName;
use switchboard_core::hub::HubEvent;
use switchboard_core::link::{FrameDecoder, frame, msg};
use switchboard_core::machine::CloseReason;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::pki::{Ca, IssuedCert};
use switchboard_runtime_smol::tls;

type Tls = futures_rustls::client::TlsStream<TcpStream>;

async fn raw_tls(rig: &Rig, config: Arc<rustls::ClientConfig>) -> io::Result<Tls> {
    let tcp = TcpStream::connect(rig.addr).await?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    TlsConnector::from(config).connect(name, tcp).await
}

async fn as_agent(rig: &Rig, cert: &IssuedCert) -> Tls {
    raw_tls(rig, rig.pki.client_tls(cert)).await.expect("TLS")
}

/// Everything the hub sends until it closes, within `limit` (panics if it stays open).
async fn read_to_close<S: futures_lite::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let r = async { Some(s.read(&mut buf).await) }
            .or(async {
                async_io::Timer::at(start + limit).await;
                None
            })
            .await;
        match r {
            None => panic!(
                "the hub did not close within {limit:?} (got {} bytes)",
                all.len()
            ),
            Some(Ok(0)) | Some(Err(_)) => return (all, start.elapsed()),
            Some(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// The Bye reasons in a byte stream from the hub.
fn byes(bytes: &[u8]) -> Vec<String> {
    let mut d = FrameDecoder::new(1 << 20);
    d.push(bytes);
    let mut out = vec![];
    while let Ok(Some(m)) = d.next_message() {
        if let Ok(Body::Bye(b)) = msg::body(m) {
            out.push(b.reason);
        }
    }
    out
}

/// A hub with one well-behaved agent ("good") connected, and an operator.
async fn setup() -> (
    Rig,
    switchboard_runtime_smol::client::AdminClient,
    async_channel::Sender<()>,
) {
    let rig = Rig::start().await;
    let mut admin = rig.admin().await;
    let (cert, secret) = rig.register(&mut admin, "good").await;
    let (stop, status) = rig.spawn_agent("good", &cert, &secret);
    connected(&status).await;
    (rig, admin, stop)
}

#[test]
fn garbage_oversize_and_early_frames_get_a_bye_and_others_keep_working() {
    smol::block_on(async {
        let (rig, mut admin, _stop) = setup().await;
        let (cert, _) = rig.register(&mut admin, "bad").await;
        let cases: [(&str, Vec<u8>, &str); 3] = [
            (
                "garbage",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "protocol error",
            ),
            (
                "oversize length",
                vec![0x00, 0x10, 0x00, 0x01],
                "over the maximum",
            ),
            (
                "frame before hello",
                frame::encode(&msg::ping(1)).to_vec(),
                "expected ClientHello",
            ),
        ];
        for (what, bytes, reason) in cases {
            let mut s = as_agent(&rig, &cert).await;
            s.write_all(&bytes).await.expect("write");
            s.flush().await.expect("flush");
            let (got, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
            let byes = byes(&got);
            assert!(
                byes.iter().any(|b| b.contains(reason)),
                "{what}: Byes {byes:?}"
            );
            rig.event(what, |e| {
                matches!(
                    e,
                    HubEvent::ConnectionFailed {
                        reason: CloseReason::Protocol(_),
                        ..
                    }
                )
            })
            .await;
            rig.echo("good", what).await;
        }
        rig.stop().await;
    });
}

#[test]
fn wrong_secret_and_unknown_agent_are_refused_alike() {
    smol::block_on(async {
        let (rig, mut admin, _stop) = setup().await;
        let (cert, _) = rig.register(&mut admin, "agent2").await;
        let ghost = rig.pki.ca.issue_client("ghost", 30).expect("cert");
        for (who, c, id, secret) in [
            ("wrong secret", &cert, "agent2", "nope"),
            ("unknown agent", &ghost, "ghost", "x"),
        ] {
            let mut s = as_agent(&rig, c).await;
            s.write_all(&frame::encode(&msg::client_hello(id, secret)))
                .await
                .expect("write");
            s.flush().await.expect("flush");
            let (got, _) = read_to_close(&mut s, Duration::from_secs(10)).await;
            assert_eq!(
                byes(&got),
                vec!["authentication failed".to_string()],
                "{who}"
            );
            rig.event(
                who,
                |e| matches!(e, HubEvent::AuthFailed { agent_id, .. } if agent_id == id),
            )
            .await;
            rig.echo("good", who).await;
        }
        rig.stop().await;
    });
}

#[test]
fn no_client_certificate_or_a_foreign_one_is_refused_by_tls() {
    smol::block_on(async {
        let (rig, _admin, _stop) = setup().await;
        // No client certificate at all.
        let roots = tls::root_store(rig.pki.ca.cert_pem().as_bytes()).expect("roots");
        let no_cert = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // A certificate from another CA.
        let other = Ca::generate("other CA").expect("ca");
        let foreign = other.issue_client("good", 30).expect("cert");
        let foreign_cfg = tls::client_config(
            rig.pki.ca.cert_pem().as_bytes(),
            foreign.cert_pem.as_bytes(),
            foreign.key_pem.as_bytes(),
        )
        .expect("tls");
        for (what, cfg) in [
            ("no client certificate", Arc::new(no_cert)),
            ("foreign CA", foreign_cfg),
        ] {
            // In TLS 1.3 a refused client certificate shows on the client's first read.
            let refused = match raw_tls(&rig, cfg).await {
                Err(_) => true,
                Ok(mut s) => {
                    let _ = s
                        .write_all(&frame::encode(&msg::client_hello("good", "x")))
                        .await;
                    let _ = s.flush().await;
                    let mut b = [0u8; 64];
                    !matches!(s.read(&mut b).await, Ok(n) if n > 0)
                }
            };
            assert!(refused, "{what} must not get a session");
            rig.echo("good", what).await;
        }
        rig.stop().await;
    });
}

#[test]
fn silent_peers_are_closed_at_their_deadlines() {
    smol::block_on(async {
        let (rig, mut admin, _stop) = setup().await;
        let (cert, secret) = rig.register(&mut admin, "quiet").await;
        // TCP that never starts TLS: closed at the 2 s handshake deadline.
        let mut tcp = TcpStream::connect(rig.addr).await.expect("tcp");
        let (_, took) = read_to_close(&mut tcp, Duration::from_secs(6)).await;
        assert!(
            took >= Duration::from_millis(1500),
            "closed too early: {took:?}"
        );
        rig.echo("good", "after silent tcp").await;
        // TLS, then no hello: Bye at the 2 s hello deadline.
        let mut s = as_agent(&rig, &cert).await;
        let (got, took) = read_to_close(&mut s, Duration::from_secs(6)).await;
        assert_eq!(byes(&got), vec!["hello timed out".to_string()]);
        assert!(
            took >= Duration::from_millis(1500),
            "closed too early: {took:?}"
        );
        rig.echo("good", "after silent tls").await;
        // A peer that authenticates, then stops answering pings: closed after about
        // ping_interval + ping_timeout (1 s + 1 s).
        let mut s = as_agent(&rig, &cert).await;
        s.write_all(&frame::encode(&msg::client_hello("quiet", &secret)))
            .await
            .expect("write");
        s.flush().await.expect("flush");
        rig.event(
            "quiet connected",
            |e| matches!(e, HubEvent::AgentConnected { agent_id, .. } if agent_id == "quiet"),
        )
        .await;
        let (_, took) = read_to_close(&mut s, Duration::from_secs(8)).await;
        assert!(
            took >= Duration::from_millis(1500),
            "closed too early: {took:?}"
        );
        rig.event("ping timeout", |e| {
            matches!(
                e,
                HubEvent::ConnectionFailed {
                    reason: CloseReason::Timeout("ping"),
                    ..
                }
            )
        })
        .await;
        rig.echo("good", "after a peer that stopped answering")
            .await;
        rig.stop().await;
    });
}

#[test]
fn certificate_naming_another_agent_is_refused_even_with_the_right_secret() {
    smol::block_on(async {
        let (rig, mut admin, _stop) = setup().await;
        let (_, secret) = rig.register(&mut admin, "target").await;
        let (other_cert, _) = rig.register(&mut admin, "other").await;
        let mut s = as_agent(&rig, &other_cert).await;
        s.write_all(&frame::encode(&msg::client_hello("target", &secret)))
            .await
            .expect("write");
        s.flush().await.expect("flush");
        let (got, _) = read_to_close(&mut s, Duration::from_secs(10)).await;
        assert_eq!(byes(&got), vec!["authentication failed".to_string()]);
        let _ = Pki::new; // the fixture's other constructor is used by other test files
        rig.stop().await;
    });
}
