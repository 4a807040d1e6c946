//! The KV channel packets (seed 002, PROTOCOLS.md §2): every datagram is exactly
//! [`PACKET_LEN`] (512) bytes, all integers big-endian.
//!
//! ```text
//! user packet    0..8  uid (u64)        8..512 data (opaque, usually opus audio)
//! system packet  0..4  magic 0xFFFFFFFF 4..8   operation (i32)
//!                8..16 uid (u64)        16..20 ackid (u32, 0 = no ACK wanted)
//!                20..24 checksum (u32)  24..512 padding (zero unless a use below)
//! ```
//!
//! A uid whose upper or lower 32 bits are `0xFFFFFFFF` is invalid: its upper half would read as
//! the system magic. Parsing borrows the datagram ([`parse`]); writers fill a caller-owned
//! `[u8; 512]`. Nothing here allocates.
//!
//! # Checksum
//!
//! The prototype's checksum is weak and unspecified, so Switchboard keeps the field for layout
//! compatibility and defines it as **CRC-32 (IEEE 802.3, the zlib/PNG one) of bytes `0..20`**
//! (magic, operation, uid, ackid). It only catches accidental corruption of the header; it
//! authenticates nothing. Authentication comes from the join token (users) or the hub's
//! HMAC signature (hub commands, [`super::control`]).
//!
//! # Uses of the padding
//!
//! - A user's JOIN packet carries its join token (when the hub issued one) in bytes
//!   `24..24+JOIN_TOKEN_LEN` ([`write_join`], [`SystemPacket::join_token`]). A member that was
//!   given a token binds (and re-binds after a NAT rebinding) its address only with such a packet.
//! - Hub-signed command packets carry channel, port, timestamp, sequence, token and an
//!   HMAC-SHA256 tag: see [`super::control`] for that layout.

use super::{JOIN_TOKEN_LEN, Uid};

/// Size of every KV channel datagram.
pub const PACKET_LEN: usize = 512;
/// Bytes of data in a user packet (after its uid).
pub const USER_DATA_LEN: usize = PACKET_LEN - 8;
/// The first four bytes of every system packet.
pub const SYSTEM_MAGIC: u32 = 0xFFFF_FFFF;
/// Offset of the padding of a system packet (first byte after the checksum).
pub const SYSTEM_HEADER_LEN: usize = 24;
/// Bytes of padding in a system packet.
pub const SYSTEM_PADDING_LEN: usize = PACKET_LEN - SYSTEM_HEADER_LEN;

/// A system packet operation (the KV `enum system_operation`; values are negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Operation {
    /// A member is alive (refreshes its expiry). The only operation the seed gives users.
    Keepalive = i32::MIN,
    /// A member joins / binds its address (user, with a token) or the hub adds a member (signed).
    Join = i32::MIN + 1,
    /// The hub removes a member (signed).
    Leave = i32::MIN + 2,
    /// Acknowledges the packet whose `ackid` it repeats.
    Ack = i32::MIN + 3,
    /// The hub closes a channel (signed).
    Kill = i32::MIN + 4,
    /// Switchboard extension, hub-signed only: open a channel on a port (a separate relay
    /// process learns its channels this way). Not part of the KV prototype.
    Open = i32::MIN + 5,
}

impl Operation {
    /// The operation with this wire value, if any.
    pub fn from_wire(value: i32) -> Option<Operation> {
        Some(match value.wrapping_sub(i32::MIN) {
            0 => Operation::Keepalive,
            1 => Operation::Join,
            2 => Operation::Leave,
            3 => Operation::Ack,
            4 => Operation::Kill,
            5 => Operation::Open,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn to_wire(self) -> i32 {
        self as i32
    }
}

/// Why a datagram is not a valid KV packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not exactly [`PACKET_LEN`] bytes.
    #[error("packet is {0} bytes, expected {PACKET_LEN}")]
    WrongSize(usize),
    /// A system packet was expected but the magic is not `0xFFFFFFFF`.
    #[error("bad system packet magic {0:#010x}")]
    WrongMagic(u32),
    /// The operation value is not one of [`Operation`].
    #[error("unknown system operation {0}")]
    UnknownOperation(i32),
    /// The uid has a 32-bit half equal to `0xFFFFFFFF`.
    #[error("invalid uid {0:#018x}")]
    InvalidUid(u64),
    /// The checksum field does not match the header.
    #[error("bad checksum {found:#010x}, expected {expected:#010x}")]
    BadChecksum {
        /// What the header's CRC-32 is.
        expected: u32,
        /// What the packet says.
        found: u32,
    },
}

/// A parsed datagram, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Data from a member.
    User(UserPacket<'a>),
    /// A system packet.
    System(SystemPacket<'a>),
}

/// A user packet: its sender's uid and 504 opaque bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPacket<'a> {
    /// The sender.
    pub uid: Uid,
    /// The data, unchecked by the relay.
    pub data: &'a [u8; USER_DATA_LEN],
}

/// A system packet, borrowing its padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemPacket<'a> {
    /// What it asks.
    pub operation: Operation,
    /// The member it is about.
    pub uid: Uid,
    /// Non-zero: the sender wants an ACK repeating this id.
    pub ackid: u32,
    /// Bytes 24..512.
    pub padding: &'a [u8; SYSTEM_PADDING_LEN],
}

impl<'a> SystemPacket<'a> {
    /// Parses a datagram that must be a system packet (a control port, for instance).
    pub fn parse(datagram: &'a [u8]) -> Result<SystemPacket<'a>, PacketError> {
        let packet = as_packet(datagram)?;
        let magic = be_u32(packet, 0);
        if magic != SYSTEM_MAGIC {
            return Err(PacketError::WrongMagic(magic));
        }
        parse_system(packet)
    }

    /// The join token in the padding of a user's JOIN packet (`None` when those bytes are all
    /// zero, i.e. no token was sent).
    pub fn join_token(&self) -> Option<&'a [u8; JOIN_TOKEN_LEN]> {
        let token = first_bytes::<JOIN_TOKEN_LEN>(self.padding);
        if token.iter().all(|&b| b == 0) {
            None
        } else {
            Some(token)
        }
    }
}

impl<'a> UserPacket<'a> {
    /// Parses a datagram that must be a user packet.
    pub fn parse(datagram: &'a [u8]) -> Result<UserPacket<'a>, PacketError> {
        match parse(datagram)? {
            Packet::User(user) => Ok(user),
            Packet::System(_) => Err(PacketError::InvalidUid(be_u64(as_packet(datagram)?, 0))),
        }
    }
}

/// Parses a datagram as a user or system packet.
///
/// A datagram whose first four bytes are the magic is a system packet; anything else is a
/// user packet whose uid must be valid.
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, PacketError> {
    let packet = as_packet(datagram)?;
    if be_u32(packet, 0) == SYSTEM_MAGIC {
        return parse_system(packet).map(Packet::System);
    }
    let uid = be_u64(packet, 0);
    if !uid_is_valid(uid) {
        return Err(PacketError::InvalidUid(uid));
    }
    let (_, data) = split_array::<8, USER_DATA_LEN>(packet);
    Ok(Packet::User(UserPacket { uid, data }))
}

fn parse_system(packet: &[u8; PACKET_LEN]) -> Result<SystemPacket<'_>, PacketError> {
    let op = be_u32(packet, 4) as i32;
    let operation = Operation::from_wire(op).ok_or(PacketError::UnknownOperation(op))?;
    let uid = be_u64(packet, 8);
    if !uid_is_valid(uid) {
        return Err(PacketError::InvalidUid(uid));
    }
    let found = be_u32(packet, 20);
    let expected = header_checksum(packet);
    if found != expected {
        return Err(PacketError::BadChecksum { expected, found });
    }
    let (_, padding) = split_array::<SYSTEM_HEADER_LEN, SYSTEM_PADDING_LEN>(packet);
    Ok(SystemPacket {
        operation,
        uid,
        ackid: be_u32(packet, 16),
        padding,
    })
}

/// Whether neither 32-bit half of `uid` is `0xFFFFFFFF`.
pub fn uid_is_valid(uid: Uid) -> bool {
    (uid >> 32) as u32 != u32::MAX && uid as u32 != u32::MAX
}

/// Writes a user packet: `uid` then `data`, zero-filled to 512 bytes. `data` longer than
/// [`USER_DATA_LEN`] is refused with [`PacketError::WrongSize`] (its length), an invalid uid
/// with [`PacketError::InvalidUid`].
pub fn write_user(buf: &mut [u8; PACKET_LEN], uid: Uid, data: &[u8]) -> Result<(), PacketError> {
    if !uid_is_valid(uid) {
        return Err(PacketError::InvalidUid(uid));
    }
    if data.len() > USER_DATA_LEN {
        return Err(PacketError::WrongSize(data.len() + 8));
    }
    buf[..8].copy_from_slice(&uid.to_be_bytes());
    buf[8..8 + data.len()].copy_from_slice(data);
    buf[8 + data.len()..].fill(0);
    Ok(())
}

/// Writes a system packet with zero padding and its checksum.
pub fn write_system(
    buf: &mut [u8; PACKET_LEN],
    operation: Operation,
    uid: Uid,
    ackid: u32,
) -> Result<(), PacketError> {
    if !uid_is_valid(uid) {
        return Err(PacketError::InvalidUid(uid));
    }
    buf[SYSTEM_HEADER_LEN..].fill(0);
    write_system_header(buf, operation, uid, ackid);
    Ok(())
}

/// Writes a user's JOIN packet carrying its join token in the padding (see the module docs).
pub fn write_join(
    buf: &mut [u8; PACKET_LEN],
    uid: Uid,
    ackid: u32,
    token: &[u8; JOIN_TOKEN_LEN],
) -> Result<(), PacketError> {
    write_system(buf, Operation::Join, uid, ackid)?;
    buf[SYSTEM_HEADER_LEN..SYSTEM_HEADER_LEN + JOIN_TOKEN_LEN].copy_from_slice(token);
    Ok(())
}

/// Writes the header (bytes 0..24, checksum included) of a system packet and leaves the
/// padding alone. The caller checks the uid.
pub(crate) fn write_system_header(
    buf: &mut [u8; PACKET_LEN],
    operation: Operation,
    uid: Uid,
    ackid: u32,
) {
    buf[0..4].copy_from_slice(&SYSTEM_MAGIC.to_be_bytes());
    buf[4..8].copy_from_slice(&operation.to_wire().to_be_bytes());
    buf[8..16].copy_from_slice(&uid.to_be_bytes());
    buf[16..20].copy_from_slice(&ackid.to_be_bytes());
    let checksum = header_checksum(buf);
    buf[20..24].copy_from_slice(&checksum.to_be_bytes());
}

/// The checksum of a system packet: CRC-32 (IEEE) of bytes `0..20`.
pub fn header_checksum(packet: &[u8; PACKET_LEN]) -> u32 {
    crc32(&packet[..20])
}

/// CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn as_packet(datagram: &[u8]) -> Result<&[u8; PACKET_LEN], PacketError> {
    datagram
        .try_into()
        .map_err(|_| PacketError::WrongSize(datagram.len()))
}

pub(crate) fn be_u32(packet: &[u8; PACKET_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&packet[at..at + 4]);
    u32::from_be_bytes(b)
}

pub(crate) fn be_u64(packet: &[u8; PACKET_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&packet[at..at + 8]);
    u64::from_be_bytes(b)
}

fn split_array<const A: usize, const B: usize>(packet: &[u8; PACKET_LEN]) -> (&[u8; A], &[u8; B]) {
    const { assert!(A + B == PACKET_LEN) };
    let (head, tail) = packet.split_at(A);
    (first_bytes::<A>(head), first_bytes::<B>(tail))
}

/// The first `N` bytes of `bytes` as an array; `bytes` is at least `N` long by construction.
fn first_bytes<const N: usize>(bytes: &[u8]) -> &[u8; N] {
    match bytes.first_chunk::<N>() {
        Some(chunk) => chunk,
        None => unreachable!("callers pass at least N bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn operation_values_are_the_kv_ones() {
        assert_eq!(Operation::Keepalive.to_wire(), -2_147_483_648);
        assert_eq!(Operation::Join.to_wire(), -2_147_483_647);
        assert_eq!(Operation::Leave.to_wire(), -2_147_483_646);
        assert_eq!(Operation::Ack.to_wire(), -2_147_483_645);
        assert_eq!(Operation::Kill.to_wire(), -2_147_483_644);
        assert_eq!(Operation::from_wire(0), None);
        assert_eq!(Operation::from_wire(i32::MAX), None);
    }

    #[test]
    fn system_layout_is_big_endian() {
        let mut buf = [0xAAu8; PACKET_LEN];
        write_system(&mut buf, Operation::Ack, 0x0102_0304_0506_0708, 9).expect("valid test input");
        assert_eq!(&buf[0..4], &[0xff; 4]);
        assert_eq!(&buf[4..8], &[0x80, 0, 0, 3]);
        assert_eq!(&buf[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&buf[16..20], &[0, 0, 0, 9]);
        assert_eq!(be_u32(&buf, 20), crc32(&buf[..20]));
        assert!(buf[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn typed_errors() {
        assert_eq!(parse(&[0u8; 511]), Err(PacketError::WrongSize(511)));
        assert_eq!(parse(&[0u8; 513]), Err(PacketError::WrongSize(513)));
        let mut buf = [0u8; PACKET_LEN];
        buf[4..8].copy_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
        assert_eq!(parse(&buf), Err(PacketError::InvalidUid(0xFFFF_FFFF)));
        assert_eq!(SystemPacket::parse(&buf), Err(PacketError::WrongMagic(0)));
        write_system(&mut buf, Operation::Keepalive, 5, 0).expect("valid test input");
        buf[4..8].copy_from_slice(&7i32.to_be_bytes());
        assert_eq!(parse(&buf), Err(PacketError::UnknownOperation(7)));
        write_system(&mut buf, Operation::Keepalive, 5, 0).expect("valid test input");
        buf[23] ^= 1;
        assert!(matches!(parse(&buf), Err(PacketError::BadChecksum { .. })));
        write_system(&mut buf, Operation::Keepalive, 5, 0).expect("valid test input");
        buf[8..16].copy_from_slice(&0x0000_0001_FFFF_FFFFu64.to_be_bytes());
        assert!(matches!(parse(&buf), Err(PacketError::InvalidUid(_))));
        assert_eq!(
            write_user(&mut buf, 0xFFFF_FFFF_0000_0001, &[]),
            Err(PacketError::InvalidUid(0xFFFF_FFFF_0000_0001))
        );
        assert_eq!(
            write_user(&mut buf, 1, &[0; 505]),
            Err(PacketError::WrongSize(513))
        );
    }

    #[test]
    fn join_token_rides_in_the_padding() {
        let mut buf = [0u8; PACKET_LEN];
        write_join(&mut buf, 42, 0, &[7; JOIN_TOKEN_LEN]).expect("valid test input");
        let Ok(Packet::System(sys)) = parse(&buf) else {
            panic!("not a system packet")
        };
        assert_eq!(sys.operation, Operation::Join);
        assert_eq!(sys.join_token(), Some(&[7; JOIN_TOKEN_LEN]));
        write_system(&mut buf, Operation::Join, 42, 0).expect("valid test input");
        let sys = SystemPacket::parse(&buf).expect("valid test input");
        assert_eq!(sys.join_token(), None);
    }

    fn valid_uid() -> impl Strategy<Value = u64> {
        any::<u64>().prop_filter("valid uid", |&u| uid_is_valid(u))
    }

    fn operation() -> impl Strategy<Value = Operation> {
        (0i32..6).prop_map(|i| Operation::from_wire(i32::MIN + i).expect("valid test input"))
    }

    proptest! {
        #[test]
        fn user_packets_round_trip(uid in valid_uid(), data in proptest::collection::vec(any::<u8>(), 0..=USER_DATA_LEN)) {
            let mut buf = [0xEEu8; PACKET_LEN];
            write_user(&mut buf, uid, &data).expect("valid test input");
            let Ok(Packet::User(user)) = parse(&buf) else { panic!("not a user packet") };
            prop_assert_eq!(user.uid, uid);
            prop_assert_eq!(&user.data[..data.len()], &data[..]);
            prop_assert!(user.data[data.len()..].iter().all(|&b| b == 0));
            prop_assert_eq!(UserPacket::parse(&buf), Ok(user));
        }

        #[test]
        fn system_packets_round_trip(op in operation(), uid in valid_uid(), ackid in any::<u32>(), token in any::<[u8; JOIN_TOKEN_LEN]>()) {
            let mut buf = [0u8; PACKET_LEN];
            write_join(&mut buf, uid, ackid, &token).expect("valid test input");
            write_system_header(&mut buf, op, uid, ackid);
            let sys = SystemPacket::parse(&buf).expect("valid test input");
            prop_assert_eq!(sys.operation, op);
            prop_assert_eq!(sys.uid, uid);
            prop_assert_eq!(sys.ackid, ackid);
            prop_assert_eq!(&sys.padding[..JOIN_TOKEN_LEN], &token[..]);
            prop_assert_eq!(parse(&buf), Ok(Packet::System(sys)));
        }

        /// Stands in for the `relay_packet` fuzz target (no `fuzz/` directory yet).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
            let _ = SystemPacket::parse(&bytes);
            let _ = UserPacket::parse(&bytes);
        }

        #[test]
        fn arbitrary_512_byte_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), PACKET_LEN), magic in any::<bool>()) {
            let mut bytes = bytes;
            if magic {
                bytes[..4].copy_from_slice(&[0xff; 4]);
            }
            if let Ok(Packet::System(sys)) = parse(&bytes) {
                let _ = sys.join_token();
            }
        }
    }
}
