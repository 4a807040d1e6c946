//! Login and certificate messages into the hub, well framed with fuzzed contents: logins,
//! session renewals, logouts, credential changes, revocations and listings from an admin
//! session, and certificate requests from an authenticated agent (signed or refused by the
//! "runtime" at random). Never a panic; no send after a close.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_core::hub::{
    ConnId, Hub, HubAction, HubConfig, PeerInfo, SignedCertificate, StoredState,
};
use switchboard_core::link::{frame, msg};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn num(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0u64, |a, x| (a << 8) | u64::from(*x))
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
    hub.load(StoredState::default(), now);
    hub.register_agent("a".into(), "$argon2id$x".into(), vec![]);
    let addr = "127.0.0.1:9".parse().expect("addr");
    hub.accept(now, ConnId(1), PeerInfo::named(addr, "a"));
    hub.accept(now, ConnId(2), PeerInfo::named(addr, "admin"));
    hub.handle_input(now, ConnId(1), &frame::encode(&msg::client_hello("a", "s")));
    let hello = msg::wrap(Body::SessionHello(pb::SessionHello::default()));
    hub.handle_input(now, ConnId(2), &frame::encode(&hello));
    let mut closed = BTreeSet::new();
    let mut t = now;
    let mut flip = false;
    let mut drain = |hub: &mut Hub, t: Instant, closed: &mut BTreeSet<ConnId>| {
        let mut signs = vec![];
        while let Some(a) = hub.poll_action() {
            match a {
                HubAction::Send { conn, .. } => {
                    assert!(!closed.contains(&conn), "send after close on {conn:?}")
                }
                HubAction::Close { conn, .. } => {
                    closed.insert(conn);
                }
                HubAction::VerifySecret { ticket, .. } => hub.handle_verified(t, ticket, true),
                HubAction::SignCertificate { ticket, name, .. } => signs.push((ticket, name)),
                _ => {}
            }
        }
        for (ticket, name) in signs {
            flip = !flip;
            let r = if flip {
                Ok(SignedCertificate {
                    certificate_pem: format!("cert of {name}"),
                    serial: "0abc".into(),
                    not_after_unix_ms: 1_800_000_000_000,
                })
            } else {
                Err("refused".into())
            };
            hub.handle_signed(t, ticket, r);
        }
    };
    drain(&mut hub, t, &mut closed);
    for chunk in data.split(|b| *b == 0xff).take(64) {
        let Some((&kind, rest)) = chunk.split_first() else {
            continue;
        };
        let (a, b) = rest.split_at(rest.len() / 2);
        let rid = num(a);
        let (conn, body) = match kind % 8 {
            0 => (2, Body::LoginRequest(pb::LoginRequest {
                request_id: rid,
                username: text(a),
                password: text(b),
                totp: num(b) as u32,
            })),
            1 => (2, Body::RenewSessionRequest(pb::RenewSessionRequest {
                request_id: rid,
                cookie: text(b),
            })),
            2 => (2, Body::LogoutRequest(pb::LogoutRequest {
                request_id: rid,
                cookie: text(b),
            })),
            3 => (2, Body::SetUserCredentialsRequest(pb::SetUserCredentialsRequest {
                request_id: rid,
                uid: num(a),
                password_hash: text(b),
                totp_secret: b.to_vec().into(),
                expires_unix_ms: num(b) as i64,
            })),
            4 => (2, Body::RevokeCertificateRequest(pb::RevokeCertificateRequest {
                request_id: rid,
                name: text(a),
                serial: text(b),
            })),
            5 => (2, Body::ListCertificatesRequest(pb::ListCertificatesRequest {
                request_id: rid,
                name: text(a),
                after_name: text(b),
                after_serial: text(a),
            })),
            _ => (1, Body::RenewCertificateRequest(pb::RenewCertificateRequest {
                request_id: rid as i64,
                csr_der: rest.to_vec().into(),
            })),
        };
        hub.handle_input(t, ConnId(conn), &frame::encode(&msg::wrap(body)));
        drain(&mut hub, t, &mut closed);
        t += Duration::from_secs(u64::from(kind) * 20);
        hub.handle_timeout(t);
        drain(&mut hub, t, &mut closed);
    }
});
