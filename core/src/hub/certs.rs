//! Certificates in the hub: renewal of agent certificates over the link (signed by the runtime
//! off the loop, recorded before it is handed out), the record of certificates seen at
//! handshakes, and revocation (refused at the next handshake, live connections closed).

use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;

use super::{
    CertificateRecord, Change, Conn, ConnId, Hub, HubAction, HubEvent, SignTicket,
    SignedCertificate,
};
use crate::machine::CloseReason;
use crate::perm::{self, Operation, Permissions};

/// Shortest time between two renewals signed on one connection: an agent needs one per
/// certificate lifetime (days at least); this bounds one that keeps asking.
pub(crate) const MIN_RENEWAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most certificates in one listing page.
const MAX_CERTS_PAGE: usize = 500;

pub(crate) struct PendingSign {
    pub(crate) conn: ConnId,
    pub(crate) request_id: i64,
    pub(crate) name: String,
}

impl Hub {
    /// Whether the certificate of `conn` was revoked (refuse the connection).
    pub(crate) fn cert_revoked(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .and_then(|e| e.peer.cert.as_ref())
            .and_then(|c| self.certificates.get(&c.serial))
            .is_some_and(|r| r.revoked_unix_ms != 0)
    }

    /// Records the certificate of `conn` the first time the hub sees it, so that
    /// `certs revoke NAME` finds certificates issued outside the hub (enrolment, renew-user).
    pub(crate) fn note_cert(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let (Some(name), Some(cert)) = (&entry.peer.cert_name, &entry.peer.cert) else {
            return;
        };
        if self.certificates.contains_key(&cert.serial) {
            return;
        }
        let rec = CertificateRecord {
            serial: cert.serial.clone(),
            name: name.clone(),
            not_after_unix_ms: cert.not_after_unix_ms,
            revoked_unix_ms: 0,
        };
        self.certificates.insert(rec.serial.clone(), rec.clone());
        self.out
            .push_back(HubAction::Persist(Change::Certificate(rec)));
    }

    /// An authenticated agent sent a certificate request.
    pub(crate) fn agent_renewal(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: i64,
        csr_der: Vec<u8>,
    ) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let Conn::Agent(link) = &mut entry.conn else {
            return;
        };
        let Some(name) = link.agent_id().map(str::to_owned) else {
            return;
        };
        if let Some(last) = self.renewals_per_conn.get(&conn)
            && now.saturating_duration_since(*last) < MIN_RENEWAL_INTERVAL
        {
            let _ = link.respond_certificate(
                request_id,
                Err("certificate renewed less than an hour ago on this connection".into()),
            );
            return self.pump_link(conn);
        }
        self.renewals_per_conn.insert(conn, now);
        let ticket = SignTicket(self.next_ticket);
        self.next_ticket += 1;
        self.signings.insert(
            ticket,
            PendingSign {
                conn,
                request_id,
                name: name.clone(),
            },
        );
        self.out.push_back(HubAction::SignCertificate {
            ticket,
            name,
            csr_der,
        });
    }

    /// The answer to a [`HubAction::SignCertificate`]. A signed certificate is recorded
    /// (persisted) before it is sent to the agent; if the agent went away meanwhile it is still
    /// recorded (it exists) but not sent. Unknown tickets are ignored.
    pub fn handle_signed(
        &mut self,
        now: Instant,
        ticket: SignTicket,
        result: Result<SignedCertificate, String>,
    ) {
        self.last_now = self.last_now.max(now);
        let Some(p) = self.signings.remove(&ticket) else {
            return;
        };
        let answer = match result {
            Ok(signed) => {
                let rec = CertificateRecord {
                    serial: signed.serial.clone(),
                    name: p.name.clone(),
                    not_after_unix_ms: signed.not_after_unix_ms,
                    revoked_unix_ms: 0,
                };
                self.certificates.insert(rec.serial.clone(), rec.clone());
                self.out
                    .push_back(HubAction::Persist(Change::Certificate(rec)));
                self.out
                    .push_back(HubAction::Event(HubEvent::CertificateIssued {
                        name: p.name.clone(),
                        serial: signed.serial,
                        not_after_unix_ms: signed.not_after_unix_ms,
                    }));
                Ok((signed.certificate_pem, signed.not_after_unix_ms))
            }
            Err(e) => {
                tracing::info!(agent = %p.name, error = %e, "certificate renewal refused");
                Err(e)
            }
        };
        let Some(entry) = self.conns.get_mut(&p.conn) else {
            return;
        };
        let Conn::Agent(link) = &mut entry.conn else {
            return;
        };
        if link.agent_id() != Some(p.name.as_str()) {
            return;
        }
        let _ = link.respond_certificate(p.request_id, answer);
        self.pump_agent(now, p.conn);
    }

    fn pump_link(&mut self, conn: ConnId) {
        // Responses queue only sends; no event or close can come out of them.
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let Conn::Agent(link) = &mut entry.conn else {
            return;
        };
        while let Some(action) = link.poll_action() {
            if let crate::machine::Action::Send(bytes) = action {
                self.out.push_back(HubAction::Send { conn, bytes });
            }
        }
    }

    /// RevokeCertificateRequest from a session.
    pub(crate) fn revoke_certificate(
        &mut self,
        now: Instant,
        conn: ConnId,
        (user, uid, perms): (&str, u64, Permissions),
        r: pb::RevokeCertificateRequest,
    ) {
        if let Err(d) = perm::authorize(user, uid, perms, &Operation::RevokeCertificate) {
            return self.control_error(conn, r.request_id, Code::Access, d.to_string());
        }
        let serial = r.serial.trim().to_ascii_lowercase();
        let targets: Vec<String> = if !serial.is_empty() {
            if serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
                return self.control_error(
                    conn,
                    r.request_id,
                    Code::Invalid,
                    "a serial is up to 64 hex digits".into(),
                );
            }
            if !self.certificates.contains_key(&serial) {
                if r.name.is_empty() {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::Invalid,
                        "an unknown serial needs the name its certificate names".into(),
                    );
                }
                // A certificate the hub never saw (issued by enrolment, not used yet).
                self.certificates.insert(
                    serial.clone(),
                    CertificateRecord {
                        serial: serial.clone(),
                        name: r.name.clone(),
                        not_after_unix_ms: 0,
                        revoked_unix_ms: 0,
                    },
                );
            }
            vec![serial]
        } else if !r.name.is_empty() {
            self.certificates
                .values()
                .filter(|c| c.name == r.name)
                .map(|c| c.serial.clone())
                .collect()
        } else {
            return self.control_error(
                conn,
                r.request_id,
                Code::Invalid,
                "give a name or a serial".into(),
            );
        };
        if targets.is_empty() {
            return self.control_error(
                conn,
                r.request_id,
                Code::NotFound,
                format!("no certificate of {:?} is known to the hub", r.name),
            );
        }
        let at = self.unix_ms(now).max(1);
        let mut serials = Vec::new();
        for s in targets {
            let Some(rec) = self.certificates.get_mut(&s) else {
                continue;
            };
            if rec.revoked_unix_ms != 0 {
                continue;
            }
            rec.revoked_unix_ms = at;
            let rec = rec.clone();
            self.out
                .push_back(HubAction::Persist(Change::Certificate(rec.clone())));
            self.out
                .push_back(HubAction::Event(HubEvent::CertificateRevoked {
                    name: rec.name,
                    serial: s.clone(),
                }));
            serials.push(s);
        }
        // Connections that use a revoked certificate end now.
        let live: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, e)| {
                e.peer
                    .cert
                    .as_ref()
                    .is_some_and(|c| serials.contains(&c.serial))
            })
            .map(|(c, _)| *c)
            .collect();
        for c in live {
            if c != conn {
                self.close_conn(
                    now,
                    c,
                    CloseReason::AuthFailed("certificate revoked".into()),
                );
            }
        }
        self.send_body(
            conn,
            Body::RevokeCertificateResponse(pb::RevokeCertificateResponse {
                request_id: r.request_id,
                serials,
            }),
        );
    }

    /// ListCertificatesRequest from a session.
    pub(crate) fn list_certificates(
        &mut self,
        conn: ConnId,
        (user, uid, perms): (&str, u64, Permissions),
        r: pb::ListCertificatesRequest,
    ) {
        if let Err(d) = perm::authorize(user, uid, perms, &Operation::ListCertificates) {
            return self.control_error(conn, r.request_id, Code::Access, d.to_string());
        }
        let mut all: Vec<&CertificateRecord> = self
            .certificates
            .values()
            .filter(|c| r.name.is_empty() || c.name == r.name)
            .filter(|c| {
                (c.name.as_str(), c.serial.as_str())
                    > (r.after_name.as_str(), r.after_serial.as_str())
            })
            .collect();
        all.sort_by(|a, b| (&a.name, &a.serial).cmp(&(&b.name, &b.serial)));
        let room = self
            .cfg
            .link
            .max_frame
            .saturating_sub(crate::link::FRAME_MARGIN);
        let mut size = 0;
        let mut certificates = Vec::new();
        let mut more = false;
        for c in all {
            let info = pb::CertificateInfo {
                serial: c.serial.clone(),
                name: c.name.clone(),
                not_after_unix_ms: c.not_after_unix_ms,
                revoked_unix_ms: c.revoked_unix_ms,
            };
            let len = prost::Message::encoded_len(&info) + 4;
            if certificates.len() == MAX_CERTS_PAGE
                || (!certificates.is_empty() && size + len > room)
            {
                more = true;
                break;
            }
            size += len;
            certificates.push(info);
        }
        self.send_body(
            conn,
            Body::ListCertificatesResponse(pb::ListCertificatesResponse {
                request_id: r.request_id,
                certificates,
                more,
            }),
        );
    }
}

#[cfg(test)]
#[path = "perm_tests.rs"]
mod perm_tests;
