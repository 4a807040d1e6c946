//! Hub commands as signed system packets, for a relay that runs as a separate process
//! (DESIGN.md §3, §9): the hub encodes each [`RelayCommand`] with [`CommandSigner`] and sends it
//! to the relay's control UDP port; the relay checks it with [`CommandVerifier`].
//!
//! # Layout (all big-endian; a 512-byte KV system packet)
//!
//! ```text
//!  0..24  system header: magic, operation, uid, ackid, checksum (see `packet`)
//! 24..32  channel id (u64)
//! 32..34  port (u16; OPEN only, else 0)
//! 34      flags: bit 0 = a join token follows (JOIN only)
//! 35      scheme version, 1
//! 36..44  issued at, milliseconds since the Unix epoch (u64)
//! 44..52  sequence (u64), strictly increasing per hub key
//! 52..68  join token (zero when absent)
//! 68..100 HMAC-SHA256 tag (all 32 bytes) over "switchboard-relay-cmd-v1" || bytes 0..68
//! 100..512 zero (ignored)
//! ```
//!
//! Operations: OPEN (Switchboard extension, uid 0) opens a channel on a port, KILL (uid 0)
//! closes it, JOIN adds `uid` (with its token when the flag is set), LEAVE removes it.
//!
//! # Replay protection
//!
//! The signed part carries a timestamp and a sequence. The verifier refuses a packet whose
//! timestamp is further than `max_skew` (default 30 s) from its own wall clock (passed in by the
//! runtime), and one whose sequence is not greater than the last accepted one. The hub should
//! start its sequence at its start time in microseconds (as [`CommandSigner::new`] is told), so
//! that a restarted hub continues above its old sequences; a restarted relay accepts the first
//! fresh packet and refuses anything older than `max_skew`.
//!
//! The key is a secret shared by the hub and its relays (at least 32 random bytes). The tag
//! comparison is constant-time (`hmac`'s `verify_slice`).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::packet::{
    self, Operation, PACKET_LEN, PacketError, SYSTEM_HEADER_LEN, SystemPacket, be_u64,
};
use super::{ChannelId, JOIN_TOKEN_LEN, RelayCommand};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for the tag of commands (prefixed to the signed bytes).
const CONTEXT: &[u8] = b"switchboard-relay-cmd-v1";
/// Domain separation for the tag of reports (relay events, see `report`).
const REPORT_CONTEXT: &[u8] = b"switchboard-relay-evt-v1";
const SCHEME_VERSION: u8 = 1;
pub(super) const CHANNEL_AT: usize = SYSTEM_HEADER_LEN;
pub(super) const PORT_AT: usize = 32;
pub(super) const FLAGS_AT: usize = 34;
const VERSION_AT: usize = 35;
const ISSUED_AT: usize = 36;
const SEQUENCE_AT: usize = 44;
/// Join token (commands) or IP address (reports).
pub(super) const TOKEN_AT: usize = 52;
/// Reports also sign this much text (an error message) after the tag.
pub(super) const REPORT_TEXT_AT: usize = SIGNED_LEN + TAG_LEN;
/// Bytes of report text.
pub(super) const REPORT_TEXT_LEN: usize = 128;

/// Which way a signed packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Hub to relay.
    Command,
    /// Relay to hub.
    Report,
}

/// Writes the signed fields after the header (channel, port, flags, version, time, sequence).
pub(super) fn write_signed_fields(
    buf: &mut [u8; PACKET_LEN],
    channel: ChannelId,
    port: u16,
    flags: u8,
    issued_unix_ms: u64,
    sequence: u64,
) {
    buf[CHANNEL_AT..PORT_AT].copy_from_slice(&channel.to_be_bytes());
    buf[PORT_AT..FLAGS_AT].copy_from_slice(&port.to_be_bytes());
    buf[FLAGS_AT] = flags;
    buf[VERSION_AT] = SCHEME_VERSION;
    buf[ISSUED_AT..SEQUENCE_AT].copy_from_slice(&issued_unix_ms.to_be_bytes());
    buf[SEQUENCE_AT..TOKEN_AT].copy_from_slice(&sequence.to_be_bytes());
}

/// Writes the tag of a packet whose other bytes are final.
pub(super) fn seal(key: &CommandKey, direction: Direction, buf: &mut [u8; PACKET_LEN]) {
    let tag = key.tag(direction, buf).finalize().into_bytes();
    buf[SIGNED_LEN..SIGNED_LEN + TAG_LEN].copy_from_slice(&tag);
}

/// Freshness of signed packets: timestamps near the clock, sequences increasing.
#[derive(Debug, Clone)]
pub(super) struct ReplayGuard {
    pub(super) max_skew: Duration,
    pub(super) last_sequence: Option<u64>,
}

impl ReplayGuard {
    pub(super) fn new() -> ReplayGuard {
        ReplayGuard {
            max_skew: Duration::from_secs(30),
            last_sequence: None,
        }
    }

    /// Checks scheme, flags, tag and freshness of a signed packet; returns its sequence.
    /// Nothing changes: call [`ReplayGuard::accept`] once the packet is used.
    pub(super) fn check(
        &self,
        key: &CommandKey,
        direction: Direction,
        bytes: &[u8; PACKET_LEN],
        allowed_flags: u8,
        unix_now: Duration,
    ) -> Result<u64, ControlError> {
        if bytes[VERSION_AT] != SCHEME_VERSION || bytes[FLAGS_AT] & !allowed_flags != 0 {
            return Err(ControlError::UnsupportedScheme);
        }
        key.tag(direction, bytes)
            .verify_slice(&bytes[SIGNED_LEN..SIGNED_LEN + TAG_LEN])
            .map_err(|_| ControlError::BadSignature)?;
        let issued_unix_ms = be_u64(bytes, ISSUED_AT);
        let now_unix_ms = u64::try_from(unix_now.as_millis()).unwrap_or(u64::MAX);
        let skew_ms = u64::try_from(self.max_skew.as_millis()).unwrap_or(u64::MAX);
        if issued_unix_ms.abs_diff(now_unix_ms) > skew_ms {
            return Err(ControlError::Stale {
                issued_unix_ms,
                now_unix_ms,
            });
        }
        let sequence = be_u64(bytes, SEQUENCE_AT);
        if let Some(last) = self.last_sequence
            && sequence <= last
        {
            return Err(ControlError::Replayed { sequence, last });
        }
        Ok(sequence)
    }

    pub(super) fn accept(&mut self, sequence: u64) {
        self.last_sequence = Some(sequence);
    }
}

impl ControlCounters {
    /// Counts one verification outcome.
    pub(super) fn count<T>(&mut self, result: &Result<T, ControlError>) {
        match result {
            Ok(_) => self.accepted += 1,
            Err(ControlError::BadSignature | ControlError::UnsupportedScheme) => {
                self.bad_signature += 1
            }
            Err(ControlError::Stale { .. } | ControlError::Replayed { .. }) => self.replayed += 1,
            Err(_) => self.malformed += 1,
        }
    }
}
/// Bytes covered by the tag.
pub const SIGNED_LEN: usize = 68;
/// Length of the tag that follows the signed bytes.
pub const TAG_LEN: usize = 32;
const FLAG_TOKEN: u8 = 1;

/// Why a control packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Not a well-formed system packet.
    #[error("malformed control packet: {0}")]
    Malformed(#[from] PacketError),
    /// A system packet that carries no command (KEEPALIVE, ACK) or no report.
    #[error("operation {0:?} carries no command or report")]
    NotACommand(Operation),
    /// Unknown scheme version or flags.
    #[error("unsupported signature scheme")]
    UnsupportedScheme,
    /// Missing or wrong HMAC tag.
    #[error("bad signature")]
    BadSignature,
    /// Issued too far from the relay's clock.
    #[error("stale command: issued at {issued_unix_ms} ms, now {now_unix_ms} ms")]
    Stale {
        /// Its timestamp.
        issued_unix_ms: u64,
        /// The relay's wall clock.
        now_unix_ms: u64,
    },
    /// Sequence not above the last accepted one.
    #[error("replayed command: sequence {sequence} <= {last}")]
    Replayed {
        /// Its sequence.
        sequence: u64,
        /// The last accepted sequence.
        last: u64,
    },
}

/// A shared HMAC-SHA256 key, keyed once (each message clones the keyed state).
#[derive(Clone)]
pub struct CommandKey {
    mac: HmacSha256,
}

impl CommandKey {
    /// A key from the shared secret (any length; use at least 32 random bytes).
    pub fn new(secret: &[u8]) -> CommandKey {
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        CommandKey { mac }
    }

    /// The tag state over a packet's signed bytes for one direction (each direction has its own
    /// context string, so a command can never pass for a report or the reverse).
    pub(super) fn tag(&self, direction: Direction, packet: &[u8; PACKET_LEN]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        match direction {
            Direction::Command => {
                mac.update(CONTEXT);
                mac.update(&packet[..SIGNED_LEN]);
            }
            Direction::Report => {
                mac.update(REPORT_CONTEXT);
                mac.update(&packet[..SIGNED_LEN]);
                mac.update(&packet[REPORT_TEXT_AT..REPORT_TEXT_AT + REPORT_TEXT_LEN]);
            }
        }
        mac
    }
}

impl std::fmt::Debug for CommandKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandKey(..)")
    }
}

/// Hub side: encodes signed command packets with increasing sequence numbers.
#[derive(Debug, Clone)]
pub struct CommandSigner {
    key: CommandKey,
    next_sequence: u64,
}

impl CommandSigner {
    /// A signer whose first packet carries `first_sequence` (use the hub's start time in
    /// microseconds since the Unix epoch, so that sequences keep increasing across restarts).
    pub fn new(key: CommandKey, first_sequence: u64) -> CommandSigner {
        CommandSigner {
            key,
            next_sequence: first_sequence,
        }
    }

    /// The sequence the next packet will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Writes `command` as a signed system packet into `buf`; returns the sequence used.
    /// `ackid` non-zero asks the relay for an ACK; `issued_unix_ms` is the hub's wall clock.
    /// An invalid uid is refused.
    pub fn encode(
        &mut self,
        command: &RelayCommand,
        ackid: u32,
        issued_unix_ms: u64,
        buf: &mut [u8; PACKET_LEN],
    ) -> Result<u64, PacketError> {
        let (operation, channel, uid, port, token) = match *command {
            RelayCommand::OpenChannel { channel, port } => {
                (Operation::Open, channel, 0, port, None)
            }
            RelayCommand::CloseChannel { channel } => (Operation::Kill, channel, 0, 0, None),
            RelayCommand::Join {
                channel,
                uid,
                token,
            } => (Operation::Join, channel, uid, 0, token),
            RelayCommand::Leave { channel, uid } => (Operation::Leave, channel, uid, 0, None),
        };
        packet::write_system(buf, operation, uid, ackid)?;
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let flags = if token.is_some() { FLAG_TOKEN } else { 0 };
        write_signed_fields(buf, channel, port, flags, issued_unix_ms, sequence);
        if let Some(token) = token {
            buf[TOKEN_AT..SIGNED_LEN].copy_from_slice(&token);
        }
        seal(&self.key, Direction::Command, buf);
        Ok(sequence)
    }
}

/// A command that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCommand {
    /// What the hub asks.
    pub command: RelayCommand,
    /// Non-zero: the hub wants an ACK system packet repeating it.
    pub ackid: u32,
    /// Its sequence.
    pub sequence: u64,
}

/// How many control packets were refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlCounters {
    /// Accepted commands.
    pub accepted: u64,
    /// Malformed packets and packets that carry no command.
    pub malformed: u64,
    /// Unsigned (no known scheme version) or badly signed packets.
    pub bad_signature: u64,
    /// Stale or replayed packets.
    pub replayed: u64,
}

/// Relay side: checks signed command packets from the hub.
#[derive(Debug, Clone)]
pub struct CommandVerifier {
    key: CommandKey,
    guard: ReplayGuard,
    counters: ControlCounters,
}

impl CommandVerifier {
    /// A verifier accepting timestamps within 30 s of the relay's clock.
    pub fn new(key: CommandKey) -> CommandVerifier {
        CommandVerifier {
            key,
            guard: ReplayGuard::new(),
            counters: ControlCounters::default(),
        }
    }

    /// Changes the accepted clock difference.
    pub fn with_max_skew(mut self, max_skew: Duration) -> CommandVerifier {
        self.guard.max_skew = max_skew;
        self
    }

    /// Counts of accepted and refused packets.
    pub fn counters(&self) -> ControlCounters {
        self.counters
    }

    /// Checks a datagram from the control port. `unix_now` is the relay's wall clock (time
    /// since the Unix epoch). Refusals are counted; nothing changes on a refusal.
    pub fn verify(
        &mut self,
        datagram: &[u8],
        unix_now: Duration,
    ) -> Result<VerifiedCommand, ControlError> {
        let result = self.check(datagram, unix_now);
        self.counters.count(&result);
        if let Ok(cmd) = &result {
            self.guard.accept(cmd.sequence);
        }
        result
    }

    fn check(&self, datagram: &[u8], unix_now: Duration) -> Result<VerifiedCommand, ControlError> {
        let sys = SystemPacket::parse(datagram)?;
        let Ok(bytes) = <&[u8; PACKET_LEN]>::try_from(datagram) else {
            return Err(PacketError::WrongSize(datagram.len()).into());
        };
        if matches!(sys.operation, Operation::Keepalive | Operation::Ack) {
            return Err(ControlError::NotACommand(sys.operation));
        }
        let sequence =
            self.guard
                .check(&self.key, Direction::Command, bytes, FLAG_TOKEN, unix_now)?;
        let channel: ChannelId = be_u64(bytes, CHANNEL_AT);
        let command = match sys.operation {
            Operation::Open => RelayCommand::OpenChannel {
                channel,
                port: u16::from_be_bytes([bytes[PORT_AT], bytes[PORT_AT + 1]]),
            },
            Operation::Kill => RelayCommand::CloseChannel { channel },
            Operation::Join => {
                let token = if bytes[FLAGS_AT] & FLAG_TOKEN != 0 {
                    let mut token = [0u8; JOIN_TOKEN_LEN];
                    token.copy_from_slice(&bytes[TOKEN_AT..SIGNED_LEN]);
                    Some(token)
                } else {
                    None
                };
                RelayCommand::Join {
                    channel,
                    uid: sys.uid,
                    token,
                }
            }
            Operation::Leave => RelayCommand::Leave {
                channel,
                uid: sys.uid,
            },
            Operation::Keepalive | Operation::Ack => {
                return Err(ControlError::NotACommand(sys.operation));
            }
        };
        Ok(VerifiedCommand {
            command,
            ackid: sys.ackid,
            sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn now_ms() -> u64 {
        NOW.as_millis() as u64
    }

    fn pair() -> (CommandSigner, CommandVerifier) {
        let key = CommandKey::new(b"0123456789abcdef0123456789abcdef");
        (
            CommandSigner::new(key.clone(), 1000),
            CommandVerifier::new(key),
        )
    }

    fn commands() -> Vec<RelayCommand> {
        vec![
            RelayCommand::OpenChannel {
                channel: 7,
                port: 40_000,
            },
            RelayCommand::Join {
                channel: 7,
                uid: 12,
                token: Some([9; JOIN_TOKEN_LEN]),
            },
            RelayCommand::Join {
                channel: 7,
                uid: 13,
                token: None,
            },
            RelayCommand::Leave {
                channel: 7,
                uid: 12,
            },
            RelayCommand::CloseChannel { channel: 7 },
        ]
    }

    #[test]
    fn every_command_round_trips() {
        let (mut signer, mut verifier) = pair();
        let mut buf = [0u8; PACKET_LEN];
        for (i, command) in commands().into_iter().enumerate() {
            let seq = signer
                .encode(&command, i as u32, now_ms(), &mut buf)
                .expect("valid test input");
            let verified = verifier.verify(&buf, NOW).expect("valid test input");
            assert_eq!(verified.command, command);
            assert_eq!(verified.ackid, i as u32);
            assert_eq!(verified.sequence, seq);
        }
        assert_eq!(verifier.counters().accepted, 5);
    }

    #[test]
    fn unsigned_or_tampered_packets_are_refused() {
        let (mut signer, mut verifier) = pair();
        let mut buf = [0u8; PACKET_LEN];
        packet::write_system(&mut buf, Operation::Leave, 3, 0).expect("valid test input");
        buf[VERSION_AT] = SCHEME_VERSION;
        assert_eq!(verifier.verify(&buf, NOW), Err(ControlError::BadSignature));
        let cmd = RelayCommand::Leave { channel: 1, uid: 3 };
        signer
            .encode(&cmd, 0, now_ms(), &mut buf)
            .expect("valid test input");
        buf[CHANNEL_AT + 7] ^= 1;
        assert_eq!(verifier.verify(&buf, NOW), Err(ControlError::BadSignature));
        let other = CommandKey::new(b"another key");
        CommandSigner::new(other, 5000)
            .encode(&cmd, 0, now_ms(), &mut buf)
            .expect("valid test input");
        assert_eq!(verifier.verify(&buf, NOW), Err(ControlError::BadSignature));
        assert_eq!(verifier.counters().bad_signature, 3);
        packet::write_system(&mut buf, Operation::Keepalive, 3, 0).expect("valid test input");
        assert_eq!(
            verifier.verify(&buf, NOW),
            Err(ControlError::NotACommand(Operation::Keepalive))
        );
        assert_eq!(
            verifier.verify(&buf[..100], NOW),
            Err(ControlError::Malformed(PacketError::WrongSize(100)))
        );
    }

    #[test]
    fn replays_and_stale_packets_are_refused() {
        let (mut signer, mut verifier) = pair();
        let mut first = [0u8; PACKET_LEN];
        let cmd = RelayCommand::CloseChannel { channel: 2 };
        signer
            .encode(&cmd, 0, now_ms(), &mut first)
            .expect("valid test input");
        assert!(verifier.verify(&first, NOW).is_ok());
        assert_eq!(
            verifier.verify(&first, NOW),
            Err(ControlError::Replayed {
                sequence: 1000,
                last: 1000
            })
        );
        let mut late = [0u8; PACKET_LEN];
        signer
            .encode(&cmd, 0, now_ms() - 31_000, &mut late)
            .expect("valid test input");
        assert!(matches!(
            verifier.verify(&late, NOW),
            Err(ControlError::Stale { .. })
        ));
        signer
            .encode(&cmd, 0, now_ms() + 29_000, &mut late)
            .expect("valid test input");
        assert!(verifier.verify(&late, NOW).is_ok());
        assert_eq!(verifier.counters().replayed, 2);
    }

    proptest! {
        /// Stands in for a fuzz target of the control decoder.
        #[test]
        fn arbitrary_control_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), PACKET_LEN), magic in any::<bool>()) {
            let (_, mut verifier) = pair();
            let mut bytes = bytes;
            if magic {
                bytes[..4].copy_from_slice(&[0xff; 4]);
            }
            prop_assert!(verifier.verify(&bytes, NOW).is_err());
        }
    }
}
