//! The UDP channel relay (seed 002): 512-byte user and system packets, one UDP socket per
//! channel, members bound to their source address.
//!
//! Control plane vs data path (firezone's relay split): membership changes arrive from the hub
//! as [`RelayCommand`]s and leave as [`RelayEvent`]s; the data path returns its forwarding
//! decision inline, allocating nothing per packet. Timers (60-second member expiry) stay timers.

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
