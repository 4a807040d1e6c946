//! Certificate scenarios under the deterministic simulator: agents renew their certificates
//! over the link for a year without dropping a command; revoked certificates are refused at the
//! next handshake, also after a hub restart. Seeds as in `sim_link` (`SIM_SEEDS=N`,
//! `SIM_SEED=x`); a failure prints the replay command.

use std::time::Duration;

use serde_json::json;
use switchboard_core::hub::{HubConfig, HubEvent};
use switchboard_core::link::LinkConfig;
use switchboard_proto::command_result::Status;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;
use switchboard_tests::scenario;
use switchboard_tests::sim::{NetConfig, World, short_timers};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const DAY: Duration = Duration::from_secs(86_400);
const DAY_MS: i64 = 86_400_000;

scenario!(
    agent_certificates_rotate_across_a_year_without_losing_a_command,
    2,
    |seed| {
        // Pings every 10 minutes keep a simulated year to about a million steps.
        let cfg = HubConfig {
            link: LinkConfig {
                ping_interval: SECS(600),
                ping_timeout: SECS(60),
                ..short_timers()
            },
            ..HubConfig::default()
        };
        let mut w = World::new(seed, cfg, NetConfig::with_loss(0.01));
        w.clock.set_limit(DAY * 400);
        w.max_steps = 30_000_000;
        w.ca.lifetime_ms = 90 * DAY_MS;
        w.register_agent("a1", "secret-a1", &[]);
        let a = w.spawn_agent("a1", "secret-a1", None);
        let first = w.issue_cert(a);
        assert!(w.run_until_cond(SECS(60), |w| w.agent(a).is_connected()));
        let op = w.connected_operator();
        let start = w.now();
        let mut commands = 0;
        while w.now() - start < DAY * 365 {
            let msg = format!("hello at {} s", (w.now() - start).as_secs());
            let id = w.start_command(op, "a1", "echo.Echo", json!({ "[args]": [msg] }));
            let ans = w.wait_answer(op, id, SECS(60));
            assert_eq!(
                (ans.status, ans.output.as_str()),
                (Status::Success, msg.as_str())
            );
            commands += 1;
            w.run_for(DAY * 2 + SECS(3_600 * (seed % 7)));
        }
        let agent = w.agent(a);
        assert!(commands > 150, "{commands} commands over the year");
        assert_eq!(
            agent.stats.connects.len(),
            1,
            "connected throughout: {:?}",
            agent.stats.closes
        );
        assert_eq!(agent.stats.renewal_failures, 0);
        // 90-day certificates renewed at two thirds: every 60 days.
        let renewals = &agent.stats.renewals;
        assert!(renewals.len() >= 6, "{} renewals in a year", renewals.len());
        let mut prev = first.clone();
        for (at, cert) in renewals {
            let at_ms = 1_700_000_000_000 + w.clock.offset(*at).as_millis() as i64;
            let due = prev.not_before_ms + (prev.not_after_ms - prev.not_before_ms) / 3 * 2;
            assert!(
                at_ms >= due && at_ms < due + DAY_MS,
                "renewed at {at_ms}, due at {due}"
            );
            assert!(
                at_ms < prev.not_after_ms,
                "renewed before the old one expired"
            );
            assert_eq!(cert.name, "a1", "the hub binds the agent id");
            assert_ne!(cert.serial, prev.serial);
            let stored = w
                .store
                .certificates
                .get(&cert.serial)
                .expect("every certificate handed out is recorded");
            assert_eq!((stored.name.as_str(), stored.revoked_unix_ms), ("a1", 0));
            prev = cert.clone();
        }
        assert_eq!(
            agent.cert.as_ref(),
            Some(&prev),
            "the agent uses the newest"
        );
        assert!(
            !first.valid_at(w.unix_ms()),
            "the first certificate has expired"
        );
        // A new connection presents the newest certificate, and works.
        // Cut long enough for the keepalive (10 min + 1 min) to end the connection.
        w.partition(a);
        w.run_for(SECS(900));
        w.heal(a);
        assert!(w.run_until_cond(SECS(120), |w| w.agent(a).is_connected()
            && w.hub_connected().contains("a1")));
        assert_eq!(w.agent(a).stats.connects.len(), 2, "it reconnected");
        let conn = w.agent(a).conn().expect("connected");
        let peer = w.peer_of(conn).expect("known connection");
        assert_eq!(
            peer.cert.as_ref().map(|c| c.serial.as_str()),
            Some(prev.serial.as_str())
        );
        let id = w.start_command(op, "a1", "echo.Echo", json!({ "[args]": ["after"] }));
        assert_eq!(w.wait_answer(op, id, SECS(60)).status, Status::Success);
        w.assert_invariants();
    }
);

scenario!(
    a_revoked_certificate_is_refused_at_the_next_handshake,
    6,
    |seed| {
        let mut w = World::quick(seed, NetConfig::with_loss(0.02));
        w.register_agent("a1", "secret-a1", &[]);
        let a = w.spawn_agent("a1", "secret-a1", None);
        let cert = w.issue_cert(a);
        assert!(w.run_until_cond(SECS(60), |w| w.hub_connected().contains("a1")));
        let op = w.connected_operator();
        let Body::RevokeCertificateResponse(r) = w.revoke_certificate(op, "a1", "") else {
            panic!("revocation refused");
        };
        assert_eq!(r.serials, vec![cert.serial.clone()]);
        assert!(w.saw(
            |e| matches!(e, HubEvent::CertificateRevoked { serial, .. } if *serial == cert.serial)
        ));
        // The live connection ends now; every new handshake is refused.
        w.run_for(SECS(120));
        let agent = w.agent(a);
        assert_eq!(agent.stats.connects.len(), 1);
        assert!(agent.stats.auth_failures >= 2, "{:?}", agent.stats.closes);
        assert!(!w.hub_connected().contains("a1"));
        assert_ne!(w.store.certificates[&cert.serial].revoked_unix_ms, 0);
        // Revocation is durable.
        w.restart_hub();
        let before = w.agent(a).stats.auth_failures;
        w.run_for(SECS(120));
        assert!(w.agent(a).stats.auth_failures > before);
        assert!(!w.hub_connected().contains("a1"));
        // Revoking again revokes nothing new; an unknown name is NOT_FOUND.
        let op = w.connected_operator();
        let Body::RevokeCertificateResponse(r) = w.revoke_certificate(op, "a1", "") else {
            panic!("second revocation refused");
        };
        assert!(r.serials.is_empty());
        match w.revoke_certificate(op, "nobody", "") {
            Body::ControlError(e) => assert_eq!(e.code, Code::NotFound as i32),
            other => panic!("{other:?}"),
        }
        // Enrolled again (a new certificate), the agent is back.
        let fresh = w.issue_cert(a);
        assert!(w.run_until_cond(SECS(120), |w| w.hub_connected().contains("a1")));
        let Body::ListCertificatesResponse(list) = w.list_certificates(op, "a1") else {
            panic!("listing refused");
        };
        let listed: Vec<(String, bool)> = list
            .certificates
            .iter()
            .map(|c| (c.serial.clone(), c.revoked_unix_ms != 0))
            .collect();
        assert!(listed.contains(&(cert.serial.clone(), true)), "{listed:?}");
        assert!(
            listed.contains(&(fresh.serial.clone(), false)),
            "{listed:?}"
        );
        w.assert_invariants();
    }
);

scenario!(a_certificate_naming_another_agent_is_refused, 4, |seed| {
    let mut w = World::quick(seed, NetConfig::with_loss(0.02));
    w.register_agent("a1", "secret-a1", &[]);
    w.register_agent("a2", "secret-a2", &[]);
    // a2's process presents a1's id with its own (valid) certificate and the right secret.
    let a = w.spawn_agent("a1", "secret-a1", Some("a2"));
    w.run_for(SECS(60));
    assert!(w.agent(a).stats.connects.is_empty());
    assert!(w.agent(a).stats.auth_failures >= 1);
    assert!(w.saw(
        |e| matches!(e, HubEvent::AuthFailed { reason, .. } if reason.contains("certificate names"))
    ));
    w.assert_invariants();
});
