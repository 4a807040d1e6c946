//! The UDP channel relay (seed 002): 512-byte user and system packets, one UDP socket per
//! channel, members bound to their source address.
//!
//! Control plane vs data path (firezone's relay split): membership changes arrive from the hub
//! as [`RelayCommand`]s and leave as [`RelayEvent`]s; the data path returns its forwarding
//! decision inline, allocating nothing per packet. Timers (60-second member expiry) stay timers.
//!
//! - [`packet`]: the 512-byte KV packets (parse borrowed, write into caller-owned buffers).
//! - [`Relay`]: the machine (commands in, [`Route`] decisions inline, events and expiry out).
//! - [`control`]: hub commands as HMAC-signed system packets, for a relay in its own process.
//! - [`report`]: that relay's events back to the hub, signed the same way (own context string).
//!
//! Security model (an improvement over the KV prototype): knowing a uid is not enough to inject
//! into a channel or hijack a member. A member's packets are accepted only from the address bound
//! to it; a member given a join token binds only with a JOIN packet carrying it. The token is a
//! bearer secret sent in clear over UDP: an on-path attacker who sees it can replay the JOIN, as
//! with any unencrypted UDP voice protocol. A KV client without a token binds on its first packet
//! after the hub's JOIN, which an attacker who races it can win (the prototype's weakness, kept
//! for compatibility).

pub mod control;
pub mod packet;
pub mod report;
// `relay::relay` is the brief's file layout; everything is re-exported here.
#[allow(clippy::module_inception)]
mod relay;

pub use control::{
    CommandKey, CommandSigner, CommandVerifier, ControlCounters, ControlError, VerifiedCommand,
};
pub use packet::{
    Operation, PACKET_LEN, Packet, PacketError, SystemPacket, USER_DATA_LEN, UserPacket,
};
pub use relay::{CommandError, DropCounters, DropReason, Relay, RelayConfig, Route, Targets};
pub use report::{ReportSigner, ReportVerifier, VerifiedReport};

/// A channel id (the KV protocol's `chid`).
pub type ChannelId = u64;

/// A user id (the KV protocol's `uid`; neither 32-bit half may be `0xFFFFFFFF`).
pub type Uid = u64;

/// Bytes of a join token: the native protocol's JOIN returns one so that a client can bind its
/// UDP address strongly (a KV client without one binds on its first packet after the JOIN).
pub const JOIN_TOKEN_LEN: usize = 16;

/// A membership change, from the hub to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayCommand {
    /// Open a channel on this UDP port.
    OpenChannel {
        /// Channel.
        channel: ChannelId,
        /// UDP port the hub assigned from its configured range.
        port: u16,
    },
    /// Close a channel and forget its members.
    CloseChannel {
        /// Channel.
        channel: ChannelId,
    },
    /// A user joined: packets from it are accepted once its address is bound.
    Join {
        /// Channel.
        channel: ChannelId,
        /// User.
        uid: Uid,
        /// When set, only a JOIN system packet carrying this token binds the address.
        token: Option<[u8; JOIN_TOKEN_LEN]>,
    },
    /// A user left or was kicked.
    Leave {
        /// Channel.
        channel: ChannelId,
        /// User.
        uid: Uid,
    },
}

/// Something the relay tells the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// A member sent nothing for the expiry period and was removed.
    MemberExpired {
        /// Channel.
        channel: ChannelId,
        /// User.
        uid: Uid,
    },
    /// A member's UDP address was bound (first packet, or a JOIN packet with its token).
    MemberBound {
        /// Channel.
        channel: ChannelId,
        /// User.
        uid: Uid,
        /// Its address.
        addr: std::net::SocketAddr,
    },
    /// A channel could not be opened (e.g. its port is taken).
    ChannelFailed {
        /// Channel.
        channel: ChannelId,
        /// Why.
        error: String,
    },
}
