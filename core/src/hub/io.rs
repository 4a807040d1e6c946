//! The hub's vocabulary with its runtime: connection ids and what is known of a peer, the
//! configuration, and what the hub asks for ([`HubAction`]) and reports ([`HubEvent`]).

use std::net::SocketAddr;

use bytes::Bytes;

use super::{Change, CommandStatus};
use crate::link::LinkConfig;
use crate::machine::CloseReason;

/// Identifies one connection of the hub. Chosen by the runtime, never reused while open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the runtime knows about a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Remote address.
    pub addr: SocketAddr,
    /// The identity named by the verified client certificate (its subject CN), if any.
    pub cert_name: Option<String>,
    /// Serial and expiry of that certificate, if any.
    pub cert: Option<PeerCert>,
    /// The connection comes through the web face: a session may start without a
    /// certificate, as a guest that can only log in (password + TOTP, or a cookie).
    pub web: bool,
}

/// The verified client certificate of a connection, as far as the hub cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// Serial number (see [`CertificateRecord::serial`](super::CertificateRecord::serial) for the form).
    pub serial: String,
    /// Unix ms after which it is no longer valid.
    pub not_after_unix_ms: i64,
}

impl PeerInfo {
    /// A peer without a client certificate (KV, tests).
    pub fn anonymous(addr: SocketAddr) -> Self {
        PeerInfo {
            addr,
            cert_name: None,
            cert: None,
            web: false,
        }
    }

    /// A peer of the web face (no client certificate; its session logs in).
    pub fn web(addr: SocketAddr) -> Self {
        PeerInfo {
            web: true,
            ..PeerInfo::anonymous(addr)
        }
    }

    /// A peer whose certificate names `name` (no serial known: tests and examples).
    pub fn named(addr: SocketAddr, name: &str) -> Self {
        PeerInfo {
            addr,
            cert_name: Some(name.to_owned()),
            cert: None,
            web: false,
        }
    }
}

/// Hub configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Limits and timers of every native connection.
    pub link: LinkConfig,
    /// Refuse an agent whose certificate names another id than its ClientHello.
    pub require_cert_match: bool,
    /// The user name whose certificate gets every permission.
    pub admin_user: String,
    /// UDP ports for channels: `(first, count)`.
    pub relay_ports: (u16, u16),
    /// Most commands running at once (waiting for their result); more are refused with
    /// UNAVAILABLE. Finished commands live only in storage.
    pub max_active_commands: usize,
    /// Events of the log kept in memory for subscribers (older ones are read from storage).
    pub event_ring: usize,
    /// Events of the log kept in storage: older ones are pruned, and a subscription that
    /// starts before them is refused with GONE.
    pub event_retention: u64,
    /// Limits and timers of streams.
    pub streams: crate::stream::StreamLimits,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            link: LinkConfig::default(),
            require_cert_match: true,
            admin_user: "admin".into(),
            max_active_commands: 100_000,
            relay_ports: (50_000, 1_000),
            event_ring: 4096,
            event_retention: 1_000_000,
            streams: crate::stream::StreamLimits::default(),
        }
    }
}

/// A pending certificate signature, handed back through [`Hub::handle_signed`](super::Hub::handle_signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SignTicket(pub u64);

/// A certificate the runtime signed for a [`HubAction::SignCertificate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its serial (see [`CertificateRecord::serial`](super::CertificateRecord::serial)).
    pub serial: String,
    /// Unix ms after which it is no longer valid.
    pub not_after_unix_ms: i64,
}

/// A pending secret verification, handed back through [`Hub::handle_verified`](super::Hub::handle_verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VerifyTicket(pub u64);

/// Something that happened, for logs, the demo, tests (and later the event log).
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    /// A certificate was issued to an agent by renewal (recorded before it was handed out).
    CertificateIssued {
        /// The agent id it names.
        name: String,
        /// Its serial.
        serial: String,
        /// Unix ms of its expiry.
        not_after_unix_ms: i64,
    },
    /// A certificate was revoked.
    CertificateRevoked {
        /// The name it names.
        name: String,
        /// Its serial.
        serial: String,
    },
    /// An agent authenticated.
    AgentConnected {
        /// Agent id.
        agent_id: String,
        /// Its connection.
        conn: ConnId,
        /// Its address.
        addr: SocketAddr,
    },
    /// An authenticated agent's connection ended.
    AgentDisconnected {
        /// Agent id.
        agent_id: String,
        /// Why.
        reason: String,
    },
    /// An agent hello was refused.
    AuthFailed {
        /// The id it claimed.
        agent_id: String,
        /// Its address.
        addr: SocketAddr,
        /// Why (for the log only: the peer just hears "authentication failed").
        reason: String,
    },
    /// An operator session opened.
    SessionOpened {
        /// The user.
        user: String,
        /// Its connection.
        conn: ConnId,
    },
    /// A command was sent to an agent.
    CommandStarted {
        /// Command id.
        command_id: i64,
        /// Agent.
        agent_id: String,
        /// Operation.
        operation: String,
    },
    /// Progress of a command.
    CommandProgress {
        /// Command id.
        command_id: i64,
        /// Current.
        current: u32,
        /// Total.
        total: u32,
        /// Message.
        message: String,
    },
    /// A command finished.
    CommandFinished {
        /// Command id.
        command_id: i64,
        /// Final status.
        status: CommandStatus,
        /// Output.
        output: String,
    },
    /// A channel was created.
    ChannelCreated {
        /// Channel.
        chid: u64,
        /// Owner.
        owner: u64,
        /// UDP port.
        port: u16,
    },
    /// A channel was deleted.
    ChannelDeleted {
        /// Channel.
        chid: u64,
    },
    /// A user joined a channel.
    MemberJoined {
        /// Channel.
        chid: u64,
        /// User.
        uid: u64,
    },
    /// A user left a channel (`expired`: removed by the relay after 60 s of silence).
    MemberLeft {
        /// Channel.
        chid: u64,
        /// User.
        uid: u64,
        /// Removed for silence.
        expired: bool,
    },
    /// The relay bound a member's UDP address.
    MemberBound {
        /// Channel.
        chid: u64,
        /// User.
        uid: u64,
        /// Address.
        addr: SocketAddr,
    },
    /// The relay could not open a channel.
    ChannelFailed {
        /// Channel.
        chid: u64,
        /// Why.
        error: String,
    },
    /// An agent was enrolled (registered, or registered again with a new secret).
    AgentRegistered {
        /// Agent id.
        agent_id: String,
    },
    /// An agent's registration was removed.
    AgentRemoved {
        /// Agent id.
        agent_id: String,
    },
    /// A data value of an agent was set.
    AgentDataSet {
        /// Agent id.
        agent_id: String,
        /// The value's name.
        name: String,
    },
    /// A secure-feed client was added (or its key replaced).
    FeedClientAdded {
        /// Client id.
        client_id: String,
        /// The user it acts as.
        user: String,
    },
    /// A secure-feed client was removed.
    FeedClientRemoved {
        /// Client id.
        client_id: String,
    },
    /// A user's login credentials (password, TOTP secret, expiry) were set.
    UserCredentialsSet {
        /// User.
        uid: u64,
    },
    /// A user was registered.
    UserRegistered {
        /// User.
        uid: u64,
    },
    /// A user was unregistered.
    UserRemoved {
        /// User.
        uid: u64,
    },
    /// A user logged in with password + TOTP.
    LoggedIn {
        /// The user.
        user: String,
        /// Its connection.
        conn: ConnId,
    },
    /// A login was refused (the reason is for the log; the client hears its result).
    LoginFailed {
        /// The user name tried.
        user: String,
        /// Why.
        reason: String,
    },
    /// A connection closed with a protocol error or timeout.
    ConnectionFailed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
}

/// What the hub asks its runtime to do. Perform them in order.
#[derive(Debug, Clone, PartialEq)]
pub enum HubAction {
    /// Write these bytes on the connection, as one write.
    Send {
        /// Connection.
        conn: ConnId,
        /// Bytes.
        bytes: Bytes,
    },
    /// Flush what was sent before, then close the connection. The hub already forgot it.
    Close {
        /// Connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Persist this change durably before performing any later action.
    Persist(Change),
    /// Verify `secret` against the argon2 PHC string `secret_hash` (off the hub loop) and call
    /// [`Hub::handle_verified`](super::Hub::handle_verified). `None`: no such agent; spend the same effort on a dummy hash
    /// and answer `false`, so that timing does not tell whether an agent id exists.
    VerifySecret {
        /// Hand back with the answer.
        ticket: VerifyTicket,
        /// The stored hash, or `None`.
        secret_hash: Option<String>,
        /// The secret the agent sent.
        secret: String,
    },
    /// Sign the certificate request `csr_der` for `name` with the hub CA (off the hub loop:
    /// signing needs randomness and the CA key, which the runtime holds) and call
    /// [`Hub::handle_signed`](super::Hub::handle_signed). The new certificate must name `name` whatever the request says,
    /// be a client certificate, and live no longer than the configured maximum.
    SignCertificate {
        /// Hand back with the answer.
        ticket: SignTicket,
        /// The agent id to bind into the certificate.
        name: String,
        /// The agent's PKCS#10 request (DER), unverified.
        csr_der: Vec<u8>,
    },
    /// Read up to `limit` stored events with an order above `after_order`, oldest first (off
    /// the hub loop), and hand them to [`Hub::handle_events_read`](super::Hub::handle_events_read).
    ReadEvents {
        /// The subscriber.
        conn: ConnId,
        /// Events after this order.
        after_order: u64,
        /// At most this many.
        limit: usize,
    },
    /// Pass this membership change to the UDP relay (after the Persist before it).
    Relay(crate::relay::RelayCommand),
    /// Something happened.
    Event(HubEvent),
}
