//! Relay events as signed system packets, for a relay that runs as a separate process: the relay
//! encodes each [`RelayEvent`] with [`ReportSigner`] and sends it to the hub (the address its
//! signed commands come from); the hub checks it with [`ReportVerifier`].
//!
//! # Layout (the command layout of [`super::control`], with its own context string)
//!
//! ```text
//!  0..24  system header: magic, operation, uid, ackid (0), checksum
//! 24..32  channel id (u64)
//! 32..34  port of the member's address (JOIN) or 0
//! 34      flags: bit 1 = the address is IPv6
//! 35      scheme version, 1
//! 36..44  issued at, ms since the Unix epoch
//! 44..52  sequence, strictly increasing per relay
//! 52..68  the member's IP address (IPv4 in the first 4 bytes)
//! 68..100 HMAC-SHA256 tag over "switchboard-relay-evt-v1" || bytes 0..68 || bytes 100..228
//! 100..228 error text of a failed channel (UTF-8, zero-padded, truncated to 128 bytes)
//! ```
//!
//! Operations: JOIN = [`RelayEvent::MemberBound`], LEAVE = [`RelayEvent::MemberExpired`],
//! KILL = [`RelayEvent::ChannelFailed`]. The distinct context string means a report can never be
//! replayed to a relay as a command, nor a command to the hub as a report. Reports are sent once
//! (UDP): the hub should treat them as hints (a lost expiry leaves a member listed until it
//! leaves or the channel closes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::control::{
    CHANNEL_AT, CommandKey, ControlCounters, ControlError, Direction, FLAGS_AT, PORT_AT,
    REPORT_TEXT_AT, REPORT_TEXT_LEN, ReplayGuard, SIGNED_LEN, TOKEN_AT, seal, write_signed_fields,
};
use super::packet::{self, Operation, PACKET_LEN, PacketError, SystemPacket, be_u64};
use super::{ChannelId, RelayEvent};

const FLAG_IPV6: u8 = 2;

/// Relay side: encodes signed event packets with increasing sequence numbers.
#[derive(Debug, Clone)]
pub struct ReportSigner {
    key: CommandKey,
    next_sequence: u64,
}

impl ReportSigner {
    /// A signer whose first packet carries `first_sequence` (use the relay's start time in
    /// microseconds since the Unix epoch, so that sequences keep increasing across restarts).
    pub fn new(key: CommandKey, first_sequence: u64) -> ReportSigner {
        ReportSigner {
            key,
            next_sequence: first_sequence,
        }
    }

    /// Writes `event` as a signed system packet into `buf`; returns the sequence used.
    /// `issued_unix_ms` is the relay's wall clock. An invalid uid is refused.
    pub fn encode(
        &mut self,
        event: &RelayEvent,
        issued_unix_ms: u64,
        buf: &mut [u8; PACKET_LEN],
    ) -> Result<u64, PacketError> {
        let (operation, channel, uid, addr, text) = match event {
            RelayEvent::MemberBound { channel, uid, addr } => {
                (Operation::Join, *channel, *uid, Some(*addr), "")
            }
            RelayEvent::MemberExpired { channel, uid } => {
                (Operation::Leave, *channel, *uid, None, "")
            }
            RelayEvent::ChannelFailed { channel, error } => {
                (Operation::Kill, *channel, 0, None, error.as_str())
            }
        };
        packet::write_system(buf, operation, uid, 0)?;
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let (port, flags) = match addr {
            Some(SocketAddr::V4(a)) => {
                buf[TOKEN_AT..TOKEN_AT + 4].copy_from_slice(&a.ip().octets());
                (a.port(), 0)
            }
            Some(SocketAddr::V6(a)) => {
                buf[TOKEN_AT..SIGNED_LEN].copy_from_slice(&a.ip().octets());
                (a.port(), FLAG_IPV6)
            }
            None => (0, 0),
        };
        write_signed_fields(buf, channel, port, flags, issued_unix_ms, sequence);
        let text = truncate_utf8(text, REPORT_TEXT_LEN);
        buf[REPORT_TEXT_AT..REPORT_TEXT_AT + text.len()].copy_from_slice(text.as_bytes());
        seal(&self.key, Direction::Report, buf);
        Ok(sequence)
    }
}

/// An event that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReport {
    /// What the relay reports.
    pub event: RelayEvent,
    /// Its sequence.
    pub sequence: u64,
}

/// Hub side: checks signed event packets from a relay.
#[derive(Debug, Clone)]
pub struct ReportVerifier {
    key: CommandKey,
    guard: ReplayGuard,
    counters: ControlCounters,
}

impl ReportVerifier {
    /// A verifier accepting timestamps within 30 s of the hub's clock.
    pub fn new(key: CommandKey) -> ReportVerifier {
        ReportVerifier {
            key,
            guard: ReplayGuard::new(),
            counters: ControlCounters::default(),
        }
    }

    /// Changes the accepted clock difference.
    pub fn with_max_skew(mut self, max_skew: Duration) -> ReportVerifier {
        self.guard.max_skew = max_skew;
        self
    }

    /// Counts of accepted and refused packets.
    pub fn counters(&self) -> ControlCounters {
        self.counters
    }

    /// Checks a datagram from the relay. `unix_now` is the hub's wall clock. Refusals are
    /// counted; nothing else changes on a refusal.
    pub fn verify(
        &mut self,
        datagram: &[u8],
        unix_now: Duration,
    ) -> Result<VerifiedReport, ControlError> {
        let result = self.check(datagram, unix_now);
        self.counters.count(&result);
        if let Ok(report) = &result {
            self.guard.accept(report.sequence);
        }
        result
    }

    fn check(&self, datagram: &[u8], unix_now: Duration) -> Result<VerifiedReport, ControlError> {
        let sys = SystemPacket::parse(datagram)?;
        let Ok(bytes) = <&[u8; PACKET_LEN]>::try_from(datagram) else {
            return Err(PacketError::WrongSize(datagram.len()).into());
        };
        if !matches!(
            sys.operation,
            Operation::Join | Operation::Leave | Operation::Kill
        ) {
            return Err(ControlError::NotACommand(sys.operation));
        }
        let sequence =
            self.guard
                .check(&self.key, Direction::Report, bytes, FLAG_IPV6, unix_now)?;
        let channel: ChannelId = be_u64(bytes, CHANNEL_AT);
        let event = match sys.operation {
            Operation::Join => {
                let port = u16::from_be_bytes([bytes[PORT_AT], bytes[PORT_AT + 1]]);
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&bytes[TOKEN_AT..SIGNED_LEN]);
                let ip = if bytes[FLAGS_AT] & FLAG_IPV6 != 0 {
                    IpAddr::V6(Ipv6Addr::from(ip))
                } else {
                    IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
                };
                RelayEvent::MemberBound {
                    channel,
                    uid: sys.uid,
                    addr: SocketAddr::new(ip, port),
                }
            }
            Operation::Leave => RelayEvent::MemberExpired {
                channel,
                uid: sys.uid,
            },
            _ => {
                let text = &bytes[REPORT_TEXT_AT..REPORT_TEXT_AT + REPORT_TEXT_LEN];
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                RelayEvent::ChannelFailed {
                    channel,
                    error: String::from_utf8_lossy(&text[..end]).into_owned(),
                }
            }
        };
        Ok(VerifiedReport { event, sequence })
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{CommandSigner, CommandVerifier, RelayCommand};
    use proptest::prelude::*;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn now_ms() -> u64 {
        NOW.as_millis() as u64
    }

    fn key() -> CommandKey {
        CommandKey::new(b"relay and hub share this secret!")
    }

    #[test]
    fn every_event_round_trips() {
        let mut signer = ReportSigner::new(key(), 10);
        let mut verifier = ReportVerifier::new(key());
        let long = "é".repeat(100);
        let events = [
            RelayEvent::MemberBound {
                channel: 4,
                uid: 9,
                addr: "203.0.113.7:40001".parse().expect("addr"),
            },
            RelayEvent::MemberBound {
                channel: 4,
                uid: 10,
                addr: "[2001:db8::1]:5000".parse().expect("addr"),
            },
            RelayEvent::MemberExpired { channel: 4, uid: 9 },
            RelayEvent::ChannelFailed {
                channel: 5,
                error: "address in use".into(),
            },
        ];
        let mut buf = [0u8; PACKET_LEN];
        for event in &events {
            signer.encode(event, now_ms(), &mut buf).expect("valid");
            assert_eq!(&verifier.verify(&buf, NOW).expect("verifies").event, event);
        }
        signer
            .encode(
                &RelayEvent::ChannelFailed {
                    channel: 6,
                    error: long.clone(),
                },
                now_ms(),
                &mut buf,
            )
            .expect("valid");
        let RelayEvent::ChannelFailed { error, .. } = verifier.verify(&buf, NOW).expect("ok").event
        else {
            panic!("wrong event")
        };
        assert_eq!(error, truncate_utf8(&long, REPORT_TEXT_LEN));
        assert_eq!(error.len(), 128);
        assert_eq!(verifier.counters().accepted, 5);
    }

    #[test]
    fn reports_and_commands_cannot_be_swapped() {
        let mut buf = [0u8; PACKET_LEN];
        ReportSigner::new(key(), 10)
            .encode(
                &RelayEvent::MemberExpired { channel: 1, uid: 2 },
                now_ms(),
                &mut buf,
            )
            .expect("valid");
        // The same bytes read as a LEAVE command: refused by the relay.
        assert_eq!(
            CommandVerifier::new(key()).verify(&buf, NOW),
            Err(ControlError::BadSignature)
        );
        CommandSigner::new(key(), 10)
            .encode(
                &RelayCommand::Leave { channel: 1, uid: 2 },
                0,
                now_ms(),
                &mut buf,
            )
            .expect("valid");
        let mut verifier = ReportVerifier::new(key());
        assert_eq!(verifier.verify(&buf, NOW), Err(ControlError::BadSignature));
        assert_eq!(verifier.counters().bad_signature, 1);
    }

    #[test]
    fn replayed_and_tampered_reports_are_refused() {
        let mut signer = ReportSigner::new(key(), 10);
        let mut verifier = ReportVerifier::new(key());
        let mut buf = [0u8; PACKET_LEN];
        let event = RelayEvent::ChannelFailed {
            channel: 1,
            error: "port taken".into(),
        };
        signer.encode(&event, now_ms(), &mut buf).expect("valid");
        let mut tampered = buf;
        tampered[REPORT_TEXT_AT] ^= 1;
        assert_eq!(
            verifier.verify(&tampered, NOW),
            Err(ControlError::BadSignature)
        );
        assert!(verifier.verify(&buf, NOW).is_ok());
        assert!(matches!(
            verifier.verify(&buf, NOW),
            Err(ControlError::Replayed { .. })
        ));
        signer
            .encode(&event, now_ms() - 60_000, &mut buf)
            .expect("valid");
        assert!(matches!(
            verifier.verify(&buf, NOW),
            Err(ControlError::Stale { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_report_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), PACKET_LEN), magic in any::<bool>()) {
            let mut verifier = ReportVerifier::new(key());
            let mut bytes = bytes;
            if magic {
                bytes[..4].copy_from_slice(&[0xff; 4]);
            }
            prop_assert!(verifier.verify(&bytes, NOW).is_err());
        }
    }
}
