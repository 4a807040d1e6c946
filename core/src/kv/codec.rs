//! The KV control wire (seed 002, PROTOCOLS.md §2): big-endian, one request then one reply.
//!
//! Request: `i32` command type, then the command's `u64` fields. The reference client pads the
//! body (the fields) to 32 bytes; both forms are accepted (see [`super::KvConn`] for how
//! padding is told apart on a connection that carries several requests). Reply: `u64` status,
//! non-zero = success and the return value; 0 is followed by an `i32` error code.
//! GET_CHANNELS replies `u64` count, the ids, then `u64` 0.
//!
//! Signed requests (required when the front listens beyond loopback): after the fields, a `u64`
//! nonce (the client's Unix time in milliseconds, strictly increasing per user) and a 32-byte
//! HMAC-SHA256 tag, keyed with the acting user's control key, over every byte before the tag.

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The padded body size of the reference client.
pub const PADDED_BODY: usize = 32;
/// Bytes of the signature trailer (nonce + tag).
pub const SIGNATURE_LEN: usize = 8 + 32;

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvRequest {
    /// CMD_CREATE = 0.
    Create {
        /// Acting user.
        uid: u64,
    },
    /// CMD_DELETE = 1.
    Delete {
        /// Acting user.
        uid: u64,
        /// Channel.
        chid: u64,
    },
    /// CMD_JOIN = 2.
    Join {
        /// Acting user.
        uid: u64,
        /// Joining user.
        juid: u64,
        /// Channel.
        chid: u64,
    },
    /// CMD_LEAVE = 3.
    Leave {
        /// Acting user.
        uid: u64,
        /// Leaving user.
        luid: u64,
        /// Channel.
        chid: u64,
    },
    /// CMD_REGISTER = 4.
    Register {
        /// Acting admin (0 = open registration).
        auid: u64,
        /// Permissions of the new user.
        perm: u64,
    },
    /// CMD_UNREGISTER = 5.
    Unregister {
        /// Acting user.
        auid: u64,
        /// User to remove.
        uid: u64,
    },
    /// CMD_GET_PORT = 6.
    GetPort {
        /// Channel.
        chid: u64,
    },
    /// CMD_GET_CHANNELS = 7.
    GetChannels,
}

impl KvRequest {
    /// The command type on the wire.
    pub fn command_type(&self) -> i32 {
        match self {
            KvRequest::Create { .. } => 0,
            KvRequest::Delete { .. } => 1,
            KvRequest::Join { .. } => 2,
            KvRequest::Leave { .. } => 3,
            KvRequest::Register { .. } => 4,
            KvRequest::Unregister { .. } => 5,
            KvRequest::GetPort { .. } => 6,
            KvRequest::GetChannels => 7,
        }
    }

    /// The user the request acts as, if it needs one (GET_* need none).
    pub fn actor(&self) -> Option<u64> {
        match *self {
            KvRequest::Create { uid } | KvRequest::Delete { uid, .. } => Some(uid),
            KvRequest::Join { uid, .. } | KvRequest::Leave { uid, .. } => Some(uid),
            KvRequest::Register { auid, .. } | KvRequest::Unregister { auid, .. } => Some(auid),
            KvRequest::GetPort { .. } | KvRequest::GetChannels => None,
        }
    }

    fn fields(&self) -> ([u64; 3], usize) {
        match *self {
            KvRequest::Create { uid } => ([uid, 0, 0], 1),
            KvRequest::Delete { uid, chid } => ([uid, chid, 0], 2),
            KvRequest::Join { uid, juid, chid } => ([uid, juid, chid], 3),
            KvRequest::Leave { uid, luid, chid } => ([uid, luid, chid], 3),
            KvRequest::Register { auid, perm } => ([auid, perm, 0], 2),
            KvRequest::Unregister { auid, uid } => ([auid, uid, 0], 2),
            KvRequest::GetPort { chid } => ([chid, 0, 0], 1),
            KvRequest::GetChannels => ([0, 0, 0], 0),
        }
    }

    /// Encodes the request (exact size, or with the body padded to 32 bytes).
    pub fn encode(&self, padded: bool, out: &mut BytesMut) {
        let (f, n) = self.fields();
        out.put_i32(self.command_type());
        for v in &f[..n] {
            out.put_u64(*v);
        }
        if padded {
            out.put_bytes(0, PADDED_BODY - 8 * n);
        }
    }

    /// Encodes the request signed with `key` and `nonce` (no padding).
    pub fn encode_signed(&self, key: &[u8], nonce: u64, out: &mut BytesMut) {
        let start = out.len();
        self.encode(false, out);
        out.put_u64(nonce);
        let tag = tag(key, &out[start..]);
        out.put_slice(&tag);
    }
}

/// Number of `u64` fields of a command type, or `None` for an unknown type.
pub fn field_count(command_type: i32) -> Option<usize> {
    Some(match command_type {
        0 | 6 => 1,
        1 | 4 | 5 => 2,
        2 | 3 => 3,
        7 => 0,
        _ => return None,
    })
}

/// Decodes the request at the start of `buf` from its exact-size form; `Ok(None)` if more
/// bytes are needed. Returns the request and the bytes it used.
pub fn decode_exact(buf: &[u8]) -> Result<Option<(KvRequest, usize)>, i32> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let ty = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Some(n) = field_count(ty) else {
        return Err(ty);
    };
    let len = 4 + 8 * n;
    if buf.len() < len {
        return Ok(None);
    }
    let f = |i: usize| {
        let o = 4 + 8 * i;
        u64::from_be_bytes([
            buf[o],
            buf[o + 1],
            buf[o + 2],
            buf[o + 3],
            buf[o + 4],
            buf[o + 5],
            buf[o + 6],
            buf[o + 7],
        ])
    };
    let req = match ty {
        0 => KvRequest::Create { uid: f(0) },
        1 => KvRequest::Delete {
            uid: f(0),
            chid: f(1),
        },
        2 => KvRequest::Join {
            uid: f(0),
            juid: f(1),
            chid: f(2),
        },
        3 => KvRequest::Leave {
            uid: f(0),
            luid: f(1),
            chid: f(2),
        },
        4 => KvRequest::Register {
            auid: f(0),
            perm: f(1),
        },
        5 => KvRequest::Unregister {
            auid: f(0),
            uid: f(1),
        },
        6 => KvRequest::GetPort { chid: f(0) },
        _ => KvRequest::GetChannels,
    };
    Ok(Some((req, len)))
}

/// HMAC-SHA256 of `data` with `key`.
pub fn tag(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: new_from_slice cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Verifies a tag in constant time.
pub fn verify_tag(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return false;
    };
    mac.update(data);
    mac.verify_slice(tag).is_ok()
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvReply {
    /// Success with this (non-zero) value.
    Ok(u64),
    /// Failure with this error code (1 server, 2 param, 3 invalid, 4 access, 5 not implemented).
    Err(i32),
    /// GET_CHANNELS: the channel ids.
    Channels(Vec<u64>),
}

impl KvReply {
    /// Encodes the reply.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            KvReply::Ok(v) => out.put_u64(*v),
            KvReply::Err(code) => {
                out.put_u64(0);
                out.put_i32(*code);
            }
            KvReply::Channels(ids) => {
                out.put_u64(ids.len() as u64);
                for id in ids {
                    out.put_u64(*id);
                }
                out.put_u64(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_padded_layouts() {
        let r = KvRequest::Join {
            uid: 1,
            juid: 2,
            chid: 3,
        };
        let mut b = BytesMut::new();
        r.encode(false, &mut b);
        assert_eq!(b.len(), 4 + 24);
        assert_eq!(&b[..4], &[0, 0, 0, 2]);
        assert_eq!(&b[4..12], &1u64.to_be_bytes());
        assert_eq!(decode_exact(&b), Ok(Some((r, 28))));
        let mut p = BytesMut::new();
        KvRequest::GetChannels.encode(true, &mut p);
        assert_eq!(p.len(), 36);
        assert_eq!(decode_exact(&p), Ok(Some((KvRequest::GetChannels, 4))));
        assert_eq!(decode_exact(&[0, 0, 0]), Ok(None));
        assert_eq!(decode_exact(&[0, 0, 0, 9]), Err(9));
        assert_eq!(decode_exact(&[0xff, 0xff, 0xff, 0xff]), Err(-1));
    }

    #[test]
    fn replies() {
        let mut b = BytesMut::new();
        KvReply::Ok(42).encode(&mut b);
        assert_eq!(&b[..], &42u64.to_be_bytes());
        b.clear();
        KvReply::Err(4).encode(&mut b);
        assert_eq!(&b[..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
        b.clear();
        // The seed's example layout: | 5 | 69 | 70 | 71 | 72 | 42 | 0 |
        KvReply::Channels(vec![69, 70, 71, 72, 42]).encode(&mut b);
        let words: Vec<u64> = b
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(words, vec![5, 69, 70, 71, 72, 42, 0]);
    }

    #[test]
    fn signatures() {
        let mut b = BytesMut::new();
        KvRequest::Create { uid: 7 }.encode_signed(b"key", 1000, &mut b);
        assert_eq!(b.len(), 12 + SIGNATURE_LEN);
        assert!(verify_tag(b"key", &b[..20], &b[20..]));
        assert!(!verify_tag(b"other", &b[..20], &b[20..]));
        let mut bad = b.clone();
        bad[11] ^= 1;
        assert!(!verify_tag(b"key", &bad[..20], &bad[20..]));
    }
}
