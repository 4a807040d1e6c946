//! A secure-feed client machine that speaks both generations of the protocol: v1 (no
//! version: signed frames, 0x00 heartbeats) and versioned clients (2: signed frames; 3 and
//! later: bare frames; WebSocket pings). For tests, tools and the benchmark; it records what a
//! real client of its version would die on.

use std::collections::VecDeque;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::crypto::{self, PrivateKey, PublicKey};
use super::messages::{
    ClientKind, ClientMessage, Hello, KEY_LEN, Reply, ServerMessage, encode_signed,
};

/// What the client saw.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The handshake reply: the last sequence the server has.
    Ready {
        /// Last INBOX sequence stored by the server.
        last_seen_sequence: i64,
        /// The server's version, if announced.
        server_version: Option<u32>,
    },
    /// A server message.
    Message(ServerMessage),
    /// A 0x00 heartbeat.
    Heartbeat,
    /// Something a real client of this version would die on (a 0x00 frame to a versioned
    /// client, an undecodable frame, a type it does not know).
    Fatal(String),
}

#[derive(Debug)]
enum State {
    AwaitReply,
    Open {
        client_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
        version: Option<u32>,
    },
}

/// A secure-feed client.
#[derive(Debug)]
pub struct FeedClient {
    key: PrivateKey,
    version: Option<u32>,
    client_key: [u8; KEY_LEN],
    rng: ChaCha20Rng,
    state: State,
    /// Binary messages to send, in order.
    pub outgoing: VecDeque<Vec<u8>>,
    /// What it saw, in order.
    pub events: Vec<ClientEvent>,
    next_sequence: i64,
}

impl FeedClient {
    /// Starts a handshake as `client_id` (its key pair `key`) with the server whose public key
    /// is `server`; `version` None is a v1 client. The hello is queued in `outgoing`.
    pub fn connect(
        client_id: &str,
        key: PrivateKey,
        server: &PublicKey,
        version: Option<u32>,
        last_seen_order: i64,
        seed: u64,
    ) -> FeedClient {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut client_key = [0u8; KEY_LEN];
        rng.fill_bytes(&mut client_key);
        let hello = Hello {
            client_id: client_id.into(),
            last_seen_order,
            client_key,
            version,
        };
        let mut outgoing = VecDeque::new();
        if let Ok(ct) = crypto::oaep_encrypt(server, &mut rng, &hello.encode()) {
            outgoing.push_back(ct);
        }
        FeedClient {
            key,
            version,
            client_key,
            rng,
            state: State::AwaitReply,
            outgoing,
            events: vec![],
            next_sequence: 0,
        }
    }

    /// Whether the handshake reply was read (the signature is sent).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// The sequence the next INBOX message gets.
    pub fn next_sequence(&self) -> i64 {
        self.next_sequence
    }

    /// One binary message from the server.
    pub fn handle_message(&mut self, data: &[u8]) {
        match &self.state {
            State::AwaitReply => {
                let reply = crypto::oaep_decrypt(&self.key, &mut self.rng, data)
                    .ok()
                    .and_then(|pt| Reply::decode(&pt).ok());
                let Some(reply) = reply else {
                    return self
                        .events
                        .push(ClientEvent::Fatal("bad handshake reply".into()));
                };
                match crypto::pss_sign(&self.key, &mut self.rng, &reply.data_to_sign) {
                    Ok(sig) => self.outgoing.push_back(sig),
                    Err(_) => return self.events.push(ClientEvent::Fatal("cannot sign".into())),
                }
                self.next_sequence = reply.last_seen_sequence + 1;
                self.events.push(ClientEvent::Ready {
                    last_seen_sequence: reply.last_seen_sequence,
                    server_version: reply.server_version,
                });
                self.state = State::Open {
                    client_key: self.client_key,
                    server_key: reply.server_key,
                    version: self.version,
                };
            }
            State::Open {
                server_key,
                version,
                ..
            } => {
                if data == [0] {
                    let e = if version.is_none() {
                        ClientEvent::Heartbeat
                    } else {
                        ClientEvent::Fatal("a 0x00 frame to a versioned client".into())
                    };
                    return self.events.push(e);
                }
                let m = crypto::open(server_key, data)
                    .ok()
                    .and_then(|pt| ServerMessage::decode(&pt, *version).ok());
                match m {
                    Some(m) => self.events.push(ClientEvent::Message(m)),
                    None => self
                        .events
                        .push(ClientEvent::Fatal("undecodable server frame".into())),
                }
            }
        }
    }

    /// Queues an INBOX message with the next sequence (or `sequence` to test gaps).
    pub fn send_inbox(&mut self, json: &[u8], sequence: Option<i64>) {
        let id = sequence.unwrap_or(self.next_sequence);
        self.next_sequence = id + 1;
        self.send(ClientKind::Inbox, id, json);
    }

    /// Queues an RPC request.
    pub fn send_rpc(&mut self, request_id: i64, json: &[u8]) {
        self.send(ClientKind::Rpc, request_id, json);
    }

    /// Queues raw bytes as a frame (tests of garbage).
    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        self.outgoing.push_back(bytes);
    }

    fn send(&mut self, kind: ClientKind, id: i64, json: &[u8]) {
        let State::Open {
            client_key,
            version,
            ..
        } = &self.state
        else {
            return;
        };
        let (client_key, version) = (*client_key, *version);
        let d = ClientMessage {
            kind,
            id,
            json: json.to_vec(),
        }
        .encode();
        let plain = if matches!(version, None | Some(2)) {
            let Ok(sig) = crypto::pss_sign(&self.key, &mut self.rng, &d) else {
                return;
            };
            encode_signed(&sig, &d)
        } else {
            d
        };
        let frame = crypto::seal(&client_key, &mut self.rng, &plain);
        self.outgoing.push_back(frame);
    }
}
