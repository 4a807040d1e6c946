//! The secure feed's messages in XDR, both directions, and which server messages a client's
//! version knows (a type it does not know crashes it: never send one).

use super::xdr::{XdrError, XdrReader, XdrWriter};

/// Longest client id.
pub const MAX_CLIENT_ID: usize = 256;
/// Longest JSON payload in a frame.
pub const MAX_JSON: usize = 1 << 20;
/// Longest signature (RSA 4096).
pub const MAX_SIGNATURE: usize = 512;
/// AES-256 key length.
pub const KEY_LEN: usize = 32;

/// The client's hello (step 1), once RSA-decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Client id (ASCII).
    pub client_id: String,
    /// The last OUTBOX order it saw (-1 or 0 = none).
    pub last_seen_order: i64,
    /// Its AES key for its frames.
    pub client_key: [u8; KEY_LEN],
    /// Protocol version (absent in v1).
    pub version: Option<u32>,
}

impl Hello {
    /// Encodes (the client side).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.opaque(self.client_id.as_bytes())
            .hyper(self.last_seen_order)
            .opaque(&self.client_key);
        if let Some(v) = self.version {
            w.uint(v);
        }
        w.finish()
    }

    /// Decodes (the server side).
    pub fn decode(b: &[u8]) -> Result<Hello, XdrError> {
        let mut r = XdrReader::new(b);
        let id = r.opaque(MAX_CLIENT_ID)?;
        if id.is_empty() || !id.iter().all(|c| c.is_ascii_graphic()) {
            return Err(XdrError::Invalid("client id"));
        }
        let last_seen_order = r.hyper()?;
        let key = r.opaque(KEY_LEN)?;
        let client_key: [u8; KEY_LEN] =
            key.try_into().map_err(|_| XdrError::Invalid("key size"))?;
        let version = if r.at_end() { None } else { Some(r.uint()?) };
        r.done()?;
        Ok(Hello {
            client_id: String::from_utf8_lossy(id).into_owned(),
            last_seen_order,
            client_key,
            version,
        })
    }
}

/// The server's reply (step 2), before RSA encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What the client must sign (step 3).
    pub data_to_sign: Vec<u8>,
    /// The last INBOX sequence the server has from this client.
    pub last_seen_sequence: i64,
    /// The server's AES key for its frames.
    pub server_key: [u8; KEY_LEN],
    /// The server's version, only to a client that sent one.
    pub server_version: Option<u32>,
}

impl Reply {
    /// Encodes (the server side).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.opaque(&self.data_to_sign)
            .hyper(self.last_seen_sequence)
            .opaque(&self.server_key);
        if let Some(v) = self.server_version {
            w.uint(v);
        }
        w.finish()
    }

    /// Decodes (the client side).
    pub fn decode(b: &[u8]) -> Result<Reply, XdrError> {
        let mut r = XdrReader::new(b);
        let data_to_sign = r.opaque(1024)?.to_vec();
        let last_seen_sequence = r.hyper()?;
        let key = r.opaque(KEY_LEN)?;
        let server_key: [u8; KEY_LEN] =
            key.try_into().map_err(|_| XdrError::Invalid("key size"))?;
        let server_version = if r.at_end() { None } else { Some(r.uint()?) };
        r.done()?;
        Ok(Reply {
            data_to_sign,
            last_seen_sequence,
            server_key,
            server_version,
        })
    }
}

/// What a client frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A sequenced command (INBOX_MESSAGE = 1): runs exactly once.
    Inbox = 1,
    /// A call (RPC_REQUEST = 2): answered with an RPC_RESPONSE of the same id.
    Rpc = 2,
}

/// A client message (the plaintext D of a frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// INBOX or RPC.
    pub kind: ClientKind,
    /// The sequence (INBOX) or request id (RPC).
    pub id: i64,
    /// JSON (`"@type"` names the operation).
    pub json: Vec<u8>,
}

impl ClientMessage {
    /// Encodes D.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.int(self.kind as i32).hyper(self.id).opaque(&self.json);
        w.finish()
    }

    /// Decodes D.
    pub fn decode(b: &[u8]) -> Result<ClientMessage, XdrError> {
        let mut r = XdrReader::new(b);
        let kind = match r.int()? {
            1 => ClientKind::Inbox,
            2 => ClientKind::Rpc,
            _ => return Err(XdrError::Invalid("message type")),
        };
        let id = r.hyper()?;
        let json = r.opaque(MAX_JSON)?.to_vec();
        r.done()?;
        Ok(ClientMessage { kind, id, json })
    }
}

/// The signed wrapper of clients without a version or of version 2: XDR[opaque signature
/// over D, opaque D].
pub fn encode_signed(signature: &[u8], d: &[u8]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.opaque(signature).opaque(d);
    w.finish()
}

/// Splits a signed wrapper into (signature, D).
pub fn decode_signed(b: &[u8]) -> Result<(&[u8], &[u8]), XdrError> {
    let mut r = XdrReader::new(b);
    let sig = r.opaque(MAX_SIGNATURE)?;
    let d = r.opaque(MAX_JSON + 64)?;
    r.done()?;
    Ok((sig, d))
}

/// ERROR_MESSAGE types (version >= 5).
pub mod error_type {
    /// Unknown.
    pub const UNKNOWN: i32 = -1;
    /// Duplicate client order id.
    pub const DUPLICATE_CLIENT_ORDER_ID: i32 = 1;
    /// Invalid payload.
    pub const INVALID_PAYLOAD: i32 = 2;
}

/// A server message (the plaintext of a server frame).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// OUTBOX_MESSAGE (1): an event of the log.
    Outbox {
        /// Its order.
        order: i64,
        /// When it happened (Unix seconds).
        timestamp: f64,
        /// The event as JSON.
        json: Vec<u8>,
    },
    /// RPC_RESPONSE (2).
    RpcResponse {
        /// The request's id.
        request_id: i64,
        /// The result or an error object, JSON.
        json: Vec<u8>,
    },
    /// ERROR_MESSAGE (3) (error_type only from version 5).
    Error {
        /// One of [`error_type`].
        error_type: i32,
        /// Text.
        message: Vec<u8>,
    },
    /// BROADCAST (4), version >= 5.
    Broadcast {
        /// JSON.
        json: Vec<u8>,
    },
    /// THROTTLING (5), version >= 4.
    Throttling {
        /// Level.
        level: i32,
        /// The sequence concerned.
        sequence_id: i64,
        /// The order concerned.
        order_id: i64,
    },
}

/// A client's version as the gates read it (none = 1).
fn level(version: Option<u32>) -> u32 {
    version.unwrap_or(1)
}

impl ServerMessage {
    /// Whether a client of `version` knows this type.
    pub fn known_by(&self, version: Option<u32>) -> bool {
        match self {
            ServerMessage::Outbox { .. }
            | ServerMessage::RpcResponse { .. }
            | ServerMessage::Error { .. } => true,
            ServerMessage::Throttling { .. } => level(version) >= 4,
            ServerMessage::Broadcast { .. } => level(version) >= 5,
        }
    }

    /// Encodes for a client of `version`; `None` if that client does not know the type.
    pub fn encode(&self, version: Option<u32>) -> Option<Vec<u8>> {
        if !self.known_by(version) {
            return None;
        }
        let mut w = XdrWriter::new();
        match self {
            ServerMessage::Outbox {
                order,
                timestamp,
                json,
            } => {
                w.int(1).hyper(*order).double(*timestamp).opaque(json);
            }
            ServerMessage::RpcResponse { request_id, json } => {
                w.int(2).hyper(*request_id).opaque(json);
            }
            ServerMessage::Error {
                error_type,
                message,
            } => {
                w.int(3);
                if level(version) >= 5 {
                    w.int(*error_type);
                }
                w.opaque(message);
            }
            ServerMessage::Broadcast { json } => {
                w.int(4).opaque(json);
            }
            ServerMessage::Throttling {
                level,
                sequence_id,
                order_id,
            } => {
                w.int(5).int(*level).hyper(*sequence_id).hyper(*order_id);
            }
        }
        Some(w.finish())
    }

    /// Decodes (the client side) as a client of `version` reads it.
    pub fn decode(b: &[u8], version: Option<u32>) -> Result<ServerMessage, XdrError> {
        let mut r = XdrReader::new(b);
        let m = match r.int()? {
            1 => ServerMessage::Outbox {
                order: r.hyper()?,
                timestamp: r.double()?,
                json: r.opaque(MAX_JSON)?.to_vec(),
            },
            2 => ServerMessage::RpcResponse {
                request_id: r.hyper()?,
                json: r.opaque(MAX_JSON)?.to_vec(),
            },
            3 => {
                let error_type = if level(version) >= 5 {
                    r.int()?
                } else {
                    error_type::UNKNOWN
                };
                ServerMessage::Error {
                    error_type,
                    message: r.opaque(MAX_JSON)?.to_vec(),
                }
            }
            4 if level(version) >= 5 => ServerMessage::Broadcast {
                json: r.opaque(MAX_JSON)?.to_vec(),
            },
            5 if level(version) >= 4 => ServerMessage::Throttling {
                level: r.int()?,
                sequence_id: r.hyper()?,
                order_id: r.hyper()?,
            },
            _ => return Err(XdrError::Invalid("server message type")),
        };
        r.done()?;
        Ok(m)
    }
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
