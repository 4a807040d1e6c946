//! The relay machine: channels, members bound to their UDP address, forwarding decisions.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::packet::{self, Operation, PACKET_LEN, Packet, PacketError};
use super::{ChannelId, JOIN_TOKEN_LEN, RelayCommand, RelayEvent, Uid};

/// Settings of a [`Relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// A member that sends nothing (data or keepalive) for this long is removed (seed: 60 s).
    pub member_expiry: Duration,
    /// The expiry sweep runs at most this often: a silent member goes within
    /// `member_expiry + sweep_interval`.
    pub sweep_interval: Duration,
    /// Seed of the lookup tables' hasher (lookups only: their order is never observed).
    pub hash_seed: u64,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            member_expiry: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(1),
            hash_seed: 0x5157_4954_4348_424f,
        }
    }
}

/// Why a datagram was not relayed. Each is counted ([`Relay::drop_counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not 512 bytes.
    WrongSize,
    /// A system packet with a bad magic (only from [`PacketError::WrongMagic`]).
    WrongMagic,
    /// A system packet with an unknown operation.
    UnknownOperation,
    /// A uid with a 32-bit half equal to `0xFFFFFFFF`.
    InvalidUid,
    /// A system packet whose checksum does not match.
    BadChecksum,
    /// The channel is not open on this relay.
    UnknownChannel,
    /// The uid has not joined this channel.
    NotMember,
    /// The uid is bound to another address.
    WrongAddress,
    /// The member has a join token and has not bound its address with a JOIN packet yet.
    Unbound,
    /// A JOIN packet without the member's token, or with a wrong one.
    BadToken,
    /// A system operation users may not send on a channel port (LEAVE, KILL, OPEN).
    NotAllowed,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        DropReason::WrongSize,
        DropReason::WrongMagic,
        DropReason::UnknownOperation,
        DropReason::InvalidUid,
        DropReason::BadChecksum,
        DropReason::UnknownChannel,
        DropReason::NotMember,
        DropReason::WrongAddress,
        DropReason::Unbound,
        DropReason::BadToken,
        DropReason::NotAllowed,
    ];
}

impl From<PacketError> for DropReason {
    fn from(error: PacketError) -> DropReason {
        match error {
            PacketError::WrongSize(_) => DropReason::WrongSize,
            PacketError::WrongMagic(_) => DropReason::WrongMagic,
            PacketError::UnknownOperation(_) => DropReason::UnknownOperation,
            PacketError::InvalidUid(_) => DropReason::InvalidUid,
            PacketError::BadChecksum { .. } => DropReason::BadChecksum,
        }
    }
}

/// Dropped datagrams, counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
}

impl DropCounters {
    /// Drops for this reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(reason, count)` for every reason, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    fn add(&mut self, reason: DropReason) {
        self.counts[reason as usize] += 1;
    }
}

/// The addresses a packet goes to: every bound member of the channel except its sender, as two
/// slices (before and after the sender's place) so that nothing is copied or allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets<'a> {
    /// Bound members before the sender.
    pub before: &'a [SocketAddr],
    /// Bound members after the sender.
    pub after: &'a [SocketAddr],
}

impl<'a> Targets<'a> {
    /// How many addresses.
    pub fn len(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// Whether there is none (the sender is alone).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every address.
    pub fn iter(&self) -> impl Iterator<Item = &'a SocketAddr> + 'a {
        self.before.iter().chain(self.after.iter())
    }
}

/// What to do with a datagram received on a channel's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// Send the received datagram, unchanged, to each of these addresses (one per other bound
    /// member: two uids bound to one address get it twice, as two members would).
    Forward(Targets<'a>),
    /// Send this packet (an ACK) back to `to`.
    Reply {
        /// The sender of the datagram.
        to: SocketAddr,
        /// The reply.
        packet: &'a [u8; PACKET_LEN],
    },
    /// Taken into account (keepalive, JOIN without ackid); nothing to send.
    Accepted,
    /// Dropped and counted.
    Drop(DropReason),
}

/// A command the relay could not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such channel is open.
    #[error("channel {0} is not open")]
    UnknownChannel(ChannelId),
    /// The uid is not a member of the channel.
    #[error("uid {uid} is not a member of channel {channel}")]
    NotMember {
        /// Channel.
        channel: ChannelId,
        /// User.
        uid: Uid,
    },
    /// The uid has a 32-bit half equal to `0xFFFFFFFF`.
    #[error("invalid uid {0:#018x}")]
    InvalidUid(Uid),
}

const NO_SLOT: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Member {
    uid: Uid,
    addr: Option<SocketAddr>,
    /// Index in `Channel::bound` while bound.
    bound_slot: u32,
    token: Option<[u8; JOIN_TOKEN_LEN]>,
    last_seen: Instant,
}

#[derive(Debug, Clone)]
struct Channel {
    id: ChannelId,
    port: u16,
    members: Vec<Member>,
    by_uid: HashMap<Uid, u32, SeededHash>,
    /// `uids[i] == members[i].uid`: small channels are searched linearly (one or two cache lines
    /// instead of a hash and two probes).
    uids: Vec<Uid>,
    /// Addresses of the bound members, contiguous for [`Targets`].
    bound: Vec<SocketAddr>,
    /// `bound_member[i]` is the index in `members` of the owner of `bound[i]`.
    bound_member: Vec<u32>,
}

/// Channels up to this many members are searched linearly.
const LINEAR_SEARCH_MAX: usize = 96;

impl Channel {
    /// The index of `uid` in `members`.
    #[inline]
    fn find(&self, uid: Uid) -> Option<usize> {
        if self.uids.len() <= LINEAR_SEARCH_MAX {
            self.uids.iter().position(|&u| u == uid)
        } else {
            self.by_uid.get(&uid).map(|&i| i as usize)
        }
    }

    fn bind(&mut self, member: usize, addr: SocketAddr) {
        let m = &mut self.members[member];
        m.addr = Some(addr);
        if m.bound_slot == NO_SLOT {
            m.bound_slot = self.bound.len() as u32;
            self.bound.push(addr);
            self.bound_member.push(member as u32);
        } else {
            self.bound[m.bound_slot as usize] = addr;
        }
    }

    fn unbind(&mut self, member: usize) {
        let slot = self.members[member].bound_slot;
        if slot == NO_SLOT {
            return;
        }
        self.members[member].bound_slot = NO_SLOT;
        self.members[member].addr = None;
        let slot = slot as usize;
        self.bound.swap_remove(slot);
        self.bound_member.swap_remove(slot);
        if let Some(&moved) = self.bound_member.get(slot) {
            self.members[moved as usize].bound_slot = slot as u32;
        }
    }

    fn remove(&mut self, member: usize) -> Member {
        self.unbind(member);
        let removed = self.members.swap_remove(member);
        self.uids.swap_remove(member);
        self.by_uid.remove(&removed.uid);
        if let Some(moved) = self.members.get(member) {
            self.by_uid.insert(moved.uid, member as u32);
            if moved.bound_slot != NO_SLOT {
                self.bound_member[moved.bound_slot as usize] = member as u32;
            }
        }
        removed
    }
}

/// The sans-IO UDP channel relay (seed 002, DESIGN.md §3 and §5).
///
/// # Rules
///
/// - Channels and members come from the hub as [`RelayCommand`]s ([`Relay::handle_command`]).
/// - A datagram that is not a valid 512-byte packet, arrives on a channel that is not open,
///   comes from a uid that has not joined, or from an address other than the one bound to its
///   uid, is dropped and counted ([`DropReason`]).
/// - A member joined **without** a token binds its address with its first packet (data,
///   keepalive or JOIN). A member joined **with** a token binds — and re-binds, e.g. after a NAT
///   rebinding — only with a JOIN system packet carrying that token; its data is dropped until
///   then. Each binding is reported as [`RelayEvent::MemberBound`].
/// - Data from a bound member is forwarded to every other bound member ([`Route::Forward`]).
///   Data, keepalives and JOINs refresh the member; a system packet with a non-zero `ackid` is
///   answered with an ACK ([`Route::Reply`]).
/// - A member silent for [`RelayConfig::member_expiry`] is removed by the timer and reported as
///   [`RelayEvent::MemberExpired`].
///
/// # Driving contract
///
/// Feed every datagram received on a channel's socket to [`Relay::route`] and act on the
/// returned [`Route`] before the next call (it borrows the relay). Apply hub commands with
/// [`Relay::handle_command`]. Call [`Relay::handle_timeout`] when [`Relay::poll_timeout`] is
/// reached (spurious calls are harmless), then drain [`Relay::poll_event`]. `now` must never go
/// backwards. The data path allocates nothing.
///
/// ```no_run
/// use std::net::UdpSocket;
/// use std::time::Instant;
/// use switchboard_core::relay::{Relay, RelayCommand, RelayConfig, Route};
///
/// let socket = UdpSocket::bind("0.0.0.0:40000")?;
/// let mut relay = Relay::new(RelayConfig::default());
/// relay.handle_command(Instant::now(), RelayCommand::OpenChannel { channel: 1, port: 40000 })?;
/// relay.handle_command(Instant::now(), RelayCommand::Join { channel: 1, uid: 7, token: None })?;
/// let mut buf = [0u8; 2048];
/// loop {
///     let (len, from) = socket.recv_from(&mut buf)?;
///     let now = Instant::now();
///     match relay.route(now, 1, from, &buf[..len]) {
///         Route::Forward(targets) => {
///             for to in targets.iter() {
///                 socket.send_to(&buf[..len], to)?;
///             }
///         }
///         Route::Reply { to, packet } => {
///             socket.send_to(packet, to)?;
///         }
///         Route::Accepted | Route::Drop(_) => {}
///     }
///     relay.handle_timeout(now);
///     while let Some(event) = relay.poll_event() {
///         println!("{event:?}");
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Relay {
    config: RelayConfig,
    channels: Vec<Option<Channel>>,
    free_slots: Vec<usize>,
    by_channel: HashMap<ChannelId, u32, SeededHash>,
    events: VecDeque<RelayEvent>,
    drops: DropCounters,
    next_sweep: Option<Instant>,
    reply: [u8; PACKET_LEN],
}

impl Relay {
    /// An empty relay.
    pub fn new(config: RelayConfig) -> Relay {
        Relay {
            config,
            channels: Vec::new(),
            free_slots: Vec::new(),
            by_channel: HashMap::with_hasher(SeededHash(config.hash_seed)),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            next_sweep: None,
            reply: [0; PACKET_LEN],
        }
    }

    /// Its settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Applies a membership change from the hub.
    pub fn handle_command(
        &mut self,
        now: Instant,
        command: RelayCommand,
    ) -> Result<(), CommandError> {
        match command {
            RelayCommand::OpenChannel { channel, port } => {
                if let Some(ch) = self.channel_mut(channel) {
                    ch.port = port;
                    return Ok(());
                }
                let state = Channel {
                    id: channel,
                    port,
                    members: Vec::new(),
                    by_uid: HashMap::with_hasher(SeededHash(self.config.hash_seed)),
                    uids: Vec::new(),
                    bound: Vec::new(),
                    bound_member: Vec::new(),
                };
                let slot = match self.free_slots.pop() {
                    Some(slot) => {
                        self.channels[slot] = Some(state);
                        slot
                    }
                    None => {
                        self.channels.push(Some(state));
                        self.channels.len() - 1
                    }
                };
                self.by_channel.insert(channel, slot as u32);
                Ok(())
            }
            RelayCommand::CloseChannel { channel } => {
                let slot = self
                    .by_channel
                    .remove(&channel)
                    .ok_or(CommandError::UnknownChannel(channel))?;
                self.channels[slot as usize] = None;
                self.free_slots.push(slot as usize);
                Ok(())
            }
            RelayCommand::Join {
                channel,
                uid,
                token,
            } => {
                if !packet::uid_is_valid(uid) {
                    return Err(CommandError::InvalidUid(uid));
                }
                let ch = self
                    .channel_mut(channel)
                    .ok_or(CommandError::UnknownChannel(channel))?;
                match ch.find(uid) {
                    Some(i) => {
                        if ch.members[i].token != token {
                            ch.unbind(i);
                            ch.members[i].token = token;
                        }
                        ch.members[i].last_seen = now;
                    }
                    None => {
                        ch.by_uid.insert(uid, ch.members.len() as u32);
                        ch.uids.push(uid);
                        ch.members.push(Member {
                            uid,
                            addr: None,
                            bound_slot: NO_SLOT,
                            token,
                            last_seen: now,
                        });
                    }
                }
                let deadline = now + self.config.member_expiry;
                self.next_sweep = Some(self.next_sweep.map_or(deadline, |t| t.min(deadline)));
                Ok(())
            }
            RelayCommand::Leave { channel, uid } => {
                let ch = self
                    .channel_mut(channel)
                    .ok_or(CommandError::UnknownChannel(channel))?;
                let &i = ch
                    .by_uid
                    .get(&uid)
                    .ok_or(CommandError::NotMember { channel, uid })?;
                ch.remove(i as usize);
                Ok(())
            }
        }
    }

    /// Decides what to do with `datagram`, received from `from` on the socket of `channel`.
    /// Allocates nothing (a binding queues one event).
    pub fn route(
        &mut self,
        now: Instant,
        channel: ChannelId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Route<'_> {
        let parsed = match packet::parse(datagram) {
            Ok(parsed) => parsed,
            Err(error) => return drop_packet(&mut self.drops, error.into()),
        };
        let Some(&slot) = self.by_channel.get(&channel) else {
            return drop_packet(&mut self.drops, DropReason::UnknownChannel);
        };
        let Some(ch) = self.channels[slot as usize].as_mut() else {
            return drop_packet(&mut self.drops, DropReason::UnknownChannel);
        };
        let (uid, system) = match parsed {
            Packet::User(user) => (user.uid, None),
            Packet::System(sys) => (sys.uid, Some(sys)),
        };
        let Some(member) = ch.find(uid) else {
            return drop_packet(&mut self.drops, DropReason::NotMember);
        };
        let m = &ch.members[member];
        let joining = system.filter(|s| s.operation == Operation::Join);
        let verdict = match (&m.token, joining) {
            (Some(token), Some(join)) => match join.join_token() {
                Some(given) if tokens_equal(given, token) => Binding::Rebind,
                _ => Binding::Refuse(DropReason::BadToken),
            },
            (Some(_), None) => match m.addr {
                Some(addr) if addr == from => Binding::Bound,
                Some(_) => Binding::Refuse(DropReason::WrongAddress),
                None => Binding::Refuse(DropReason::Unbound),
            },
            (None, _) => match m.addr {
                Some(addr) if addr == from => Binding::Bound,
                Some(_) => Binding::Refuse(DropReason::WrongAddress),
                None => Binding::Rebind,
            },
        };
        match verdict {
            Binding::Refuse(reason) => return drop_packet(&mut self.drops, reason),
            Binding::Rebind if m.addr != Some(from) => {
                ch.bind(member, from);
                self.events.push_back(RelayEvent::MemberBound {
                    channel,
                    uid,
                    addr: from,
                });
            }
            Binding::Rebind | Binding::Bound => {}
        }
        let m = &mut ch.members[member];
        let Some(sys) = system else {
            m.last_seen = now;
            let sender = m.bound_slot as usize;
            return Route::Forward(Targets {
                before: &ch.bound[..sender],
                after: &ch.bound[sender + 1..],
            });
        };
        match sys.operation {
            Operation::Keepalive | Operation::Join | Operation::Ack => {
                m.last_seen = now;
                if sys.ackid != 0 && sys.operation != Operation::Ack {
                    // The uid was valid when parsed, so writing it back cannot fail.
                    let _ = packet::write_system(&mut self.reply, Operation::Ack, uid, sys.ackid);
                    Route::Reply {
                        to: from,
                        packet: &self.reply,
                    }
                } else {
                    Route::Accepted
                }
            }
            Operation::Leave | Operation::Kill | Operation::Open => {
                drop_packet(&mut self.drops, DropReason::NotAllowed)
            }
        }
    }

    /// Removes the members whose expiry has passed. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_sweep {
            Some(at) if now >= at => {}
            _ => return,
        }
        let expiry = self.config.member_expiry;
        let mut earliest: Option<Instant> = None;
        for ch in self.channels.iter_mut().flatten() {
            let mut i = 0;
            while i < ch.members.len() {
                let deadline = ch.members[i].last_seen + expiry;
                if now >= deadline {
                    let gone = ch.remove(i);
                    self.events.push_back(RelayEvent::MemberExpired {
                        channel: ch.id,
                        uid: gone.uid,
                    });
                } else {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    i += 1;
                }
            }
        }
        self.next_sweep = earliest.map(|e| e.max(now + self.config.sweep_interval));
    }

    /// When to call [`Relay::handle_timeout`] next (`None`: no member can expire). This is only
    /// the expiry sweep: events wait in [`Relay::poll_event`], which the owner drains after every
    /// call that can produce one (`route`, `handle_timeout`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// The next event for the hub.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// Dropped datagrams by reason.
    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    /// Whether `channel` is open.
    pub fn has_channel(&self, channel: ChannelId) -> bool {
        self.by_channel.contains_key(&channel)
    }

    /// The port `channel` was opened on.
    pub fn channel_port(&self, channel: ChannelId) -> Option<u16> {
        self.channel(channel).map(|ch| ch.port)
    }

    /// How many members `channel` has (bound or not).
    pub fn member_count(&self, channel: ChannelId) -> usize {
        self.channel(channel).map_or(0, |ch| ch.members.len())
    }

    /// The address `uid` is bound to in `channel`.
    pub fn member_addr(&self, channel: ChannelId, uid: Uid) -> Option<SocketAddr> {
        let ch = self.channel(channel)?;
        ch.members[ch.find(uid)?].addr
    }

    fn channel(&self, channel: ChannelId) -> Option<&Channel> {
        let &slot = self.by_channel.get(&channel)?;
        self.channels[slot as usize].as_ref()
    }

    fn channel_mut(&mut self, channel: ChannelId) -> Option<&mut Channel> {
        let &slot = self.by_channel.get(&channel)?;
        self.channels[slot as usize].as_mut()
    }
}

enum Binding {
    /// Already bound to this address.
    Bound,
    /// Bind (or re-bind) to the sender's address.
    Rebind,
    /// Drop the packet.
    Refuse(DropReason),
}

fn drop_packet(drops: &mut DropCounters, reason: DropReason) -> Route<'static> {
    drops.add(reason);
    Route::Drop(reason)
}

/// Compares tokens in time independent of where they differ.
fn tokens_equal(a: &[u8; JOIN_TOKEN_LEN], b: &[u8; JOIN_TOKEN_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A seeded multiply-fold hasher for the relay's `u64` keys (fast and deterministic; the maps
/// are only looked up, never iterated, so the order is never observed).
#[derive(Debug, Clone, Copy)]
struct SeededHash(u64);

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

fn fold_mul(a: u64, b: u64) -> u64 {
    let full = (a as u128) * (b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

impl BuildHasher for SeededHash {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct SeededHasher(u64);

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = fold_mul(self.0 ^ value, MULTIPLIER);
    }

    fn finish(&self) -> u64 {
        fold_mul(self.0, MULTIPLIER ^ 0xA076_1D64_78BD_642F)
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
