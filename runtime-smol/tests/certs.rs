//! Certificate lifecycle over real TLS: an agent renews its certificate over the link, stores it
//! before use and reconnects with it; a revoked certificate is refused at the next handshake;
//! an interrupted install is finished at the next start.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Rig, connected};
use switchboard_core::hub::HubEvent;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::agent::{AgentStatus, RenewalFiles};
use switchboard_runtime_smol::pki::{self, IssuedCert};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

async fn status(
    rx: &async_channel::Receiver<AgentStatus>,
    f: impl Fn(&AgentStatus) -> bool,
) -> AgentStatus {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = futures_lite::future::or(async { rx.recv().await.ok() }, async {
            async_io::Timer::at(until).await;
            None
        })
        .await
        .expect("agent status within 20 s");
        if f(&s) {
            return s;
        }
    }
}

#[test]
fn an_agent_renews_stores_and_reconnects_with_its_new_certificate() {
    smol::block_on(async {
        let rig = Rig::start().await;
        let mut admin = rig.admin().await;
        let (_, secret) = rig.register(&mut admin, "renewer").await;
        // A certificate two thirds into its life: due for renewal at once.
        let now = unix_now();
        let old = rig
            .pki
            .ca
            .issue_client_between("renewer", now - 20 * 86_400, now + 10 * 86_400)
            .expect("cert");
        let old_id = old.identity().expect("identity");
        let dir = tempfile::tempdir().expect("tmp");
        old.write_to(dir.path(), "agent.pem", "agent.key")
            .expect("write");
        let files = RenewalFiles {
            ca_pem: rig.pki.ca.cert_pem().as_bytes().to_vec(),
            cert_path: dir.path().join("agent.pem"),
            key_path: dir.path().join("agent.key"),
        };
        let (stop, rx) = rig.spawn_agent_renewing("renewer", &old, &secret, Some(files.clone()));
        connected(&rx).await;
        let AgentStatus::CertificateRenewed { not_after_unix_ms } =
            status(&rx, |s| matches!(s, AgentStatus::CertificateRenewed { .. })).await
        else {
            unreachable!()
        };
        let issued = rig
            .event("certificate issued", |e| {
                matches!(e, HubEvent::CertificateIssued { .. })
            })
            .await;
        // The files hold the new pair (stored before use), naming the agent, a year long.
        let new = IssuedCert::read_from(dir.path(), "agent.pem", "agent.key").expect("read");
        let new_id = new.identity().expect("identity");
        assert_eq!(new_id.common_name.as_deref(), Some("renewer"));
        assert_ne!(new_id.serial, old_id.serial);
        assert_eq!(new_id.not_after_unix * 1000, not_after_unix_ms);
        assert!(new_id.not_after_unix > now + 360 * 86_400);
        assert!(
            matches!(issued, HubEvent::CertificateIssued { serial, .. } if serial == new_id.serial)
        );
        assert_ne!(new.key_pem, old.key_pem, "a new key");
        // The connection that renewed keeps working.
        rig.echo("renewer", "still here").await;
        // The next connection presents the new certificate: revoke the old one, restart the
        // agent, and it still gets in.
        let rid = admin.request_id();
        let req = pb::RevokeCertificateRequest {
            request_id: rid,
            name: "renewer".into(),
            serial: old_id.serial.clone(),
        };
        let resp = admin
            .call(
                rid,
                Body::RevokeCertificateRequest(req),
                Duration::from_secs(10),
            )
            .await
            .expect("revoke");
        assert!(
            matches!(&resp, Body::RevokeCertificateResponse(r) if r.serials == vec![old_id.serial.clone()]),
            "{resp:?}"
        );
        drop(stop);
        let (stop2, rx2) = rig.spawn_agent_renewing("renewer", &new, &secret, Some(files));
        connected(&rx2).await;
        rig.echo("renewer", "with the new one").await;
        drop(stop2);
        rig.stop().await;
    });
}

#[test]
fn a_revoked_certificate_is_refused_and_its_connection_closed() {
    smol::block_on(async {
        let rig = Rig::start().await;
        let mut admin = rig.admin().await;
        let (cert, secret) = rig.register(&mut admin, "doomed").await;
        let serial = cert.identity().expect("identity").serial;
        let (_stop, rx) = rig.spawn_agent("doomed", &cert, &secret);
        connected(&rx).await;
        let rid = admin.request_id();
        let req = pb::RevokeCertificateRequest {
            request_id: rid,
            name: "doomed".into(),
            serial: String::new(),
        };
        let resp = admin
            .call(
                rid,
                Body::RevokeCertificateRequest(req),
                Duration::from_secs(10),
            )
            .await
            .expect("revoke");
        assert!(
            matches!(&resp, Body::RevokeCertificateResponse(r) if r.serials == vec![serial.clone()]),
            "{resp:?}"
        );
        status(&rx, |s| matches!(s, AgentStatus::Disconnected { .. })).await;
        let refused = rig
            .event("refused handshake", |e| {
                matches!(e, HubEvent::ConnectionFailed { reason, .. } if reason.to_string().contains("revoked"))
            })
            .await;
        assert!(matches!(refused, HubEvent::ConnectionFailed { .. }));
        // The listing shows it revoked.
        let rid = admin.request_id();
        let req = pb::ListCertificatesRequest {
            request_id: rid,
            name: "doomed".into(),
            ..Default::default()
        };
        let Body::ListCertificatesResponse(list) = admin
            .call(
                rid,
                Body::ListCertificatesRequest(req),
                Duration::from_secs(10),
            )
            .await
            .expect("list")
        else {
            panic!("listing refused");
        };
        assert_eq!(list.certificates.len(), 1);
        assert_eq!(list.certificates[0].serial, serial);
        assert_ne!(list.certificates[0].revoked_unix_ms, 0);
        rig.stop().await;
    });
}

#[test]
fn an_interrupted_install_is_finished_or_dropped() {
    let ca = pki::Ca::generate("test").expect("ca");
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = (dir.path().join("a.pem"), dir.path().join("a.key"));
    let old = ca.issue_client("a", 30).expect("old");
    old.write_to(dir.path(), "a.pem", "a.key").expect("write");
    let new = ca.issue_client("a", 30).expect("new");
    // Crash after both new files were written, before the renames: finished.
    std::fs::write(dir.path().join("a.key.new"), &new.key_pem).expect("w");
    std::fs::write(dir.path().join("a.pem.new"), &new.cert_pem).expect("w");
    assert!(pki::recover_renewal(&cert, &key).expect("recover"));
    assert_eq!(std::fs::read_to_string(&cert).expect("r"), new.cert_pem);
    assert_eq!(std::fs::read_to_string(&key).expect("r"), new.key_pem);
    // Crash after the key was renamed: the certificate follows.
    let newer = ca.issue_client("a", 30).expect("newer");
    std::fs::write(&key, &newer.key_pem).expect("w");
    std::fs::write(dir.path().join("a.pem.new"), &newer.cert_pem).expect("w");
    assert!(pki::recover_renewal(&cert, &key).expect("recover"));
    assert_eq!(std::fs::read_to_string(&cert).expect("r"), newer.cert_pem);
    // Crash while writing (only the key): dropped, the old pair stays.
    std::fs::write(dir.path().join("a.key.new"), "partial").expect("w");
    assert!(!pki::recover_renewal(&cert, &key).expect("recover"));
    assert!(!dir.path().join("a.key.new").exists());
    assert_eq!(std::fs::read_to_string(&key).expect("r"), newer.key_pem);
    // The full install leaves a matching pair and no leftovers.
    let last = ca.issue_client("a", 30).expect("last");
    pki::install_renewed(&cert, &key, &last.cert_pem, &last.key_pem).expect("install");
    assert_eq!(std::fs::read_to_string(&cert).expect("r"), last.cert_pem);
    assert_eq!(std::fs::read_to_string(&key).expect("r"), last.key_pem);
    assert!(!dir.path().join("a.pem.new").exists());
}

#[test]
fn a_certificate_request_is_bound_to_the_link_id() {
    let ca = pki::Ca::generate("test").expect("ca");
    // The request names "mallory"; the hub signs for the agent of the link.
    let req = pki::new_key_and_request("mallory").expect("csr");
    let pem = ca.sign_client_csr("a1", &req.csr_der, 30).expect("sign");
    let id = IssuedCert {
        cert_pem: pem,
        key_pem: String::new(),
    }
    .identity()
    .expect("identity");
    assert_eq!(id.common_name.as_deref(), Some("a1"));
    // A request whose signature does not verify, or garbage, is refused.
    let mut bad = req.csr_der.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(ca.sign_client_csr("a1", &bad, 30).is_err());
    assert!(ca.sign_client_csr("a1", b"not a request", 30).is_err());
    assert!(ca.sign_client_csr("a1", &vec![0u8; 9000], 30).is_err());
}
