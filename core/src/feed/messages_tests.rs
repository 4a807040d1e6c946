//! The byte vectors of `testdata/cryptology.txt` (made with the real client's own packing
//! code), and the version gates.

use super::*;

/// The hex of the vector named `what`.
fn vector(what: &str) -> Vec<u8> {
    let text = include_str!("testdata/cryptology.txt");
    let line = text
        .lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no vector {what}"));
    let hex_part = line.split_whitespace().last().expect("hex");
    hex::decode(hex_part).expect("hex")
}

fn key() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

#[test]
fn hello_v5_and_v1() {
    let v5 = vector("hello v5");
    let hello = Hello {
        client_id: "test".into(),
        last_seen_order: 5,
        client_key: key(),
        version: Some(5),
    };
    assert_eq!(hello.encode(), v5);
    assert_eq!(Hello::decode(&v5), Ok(hello.clone()));
    let v1 = &v5[..v5.len() - 4];
    let h1 = Hello::decode(v1).expect("v1 hello");
    assert_eq!(h1.version, None);
    assert_eq!(
        Hello {
            version: None,
            ..hello
        }
        .encode(),
        v1
    );
}

#[test]
fn handshake_reply() {
    let b = vector("handshake reply");
    let reply = Reply {
        data_to_sign: vec![0xaa; 32],
        last_seen_sequence: 41,
        server_key: key(),
        server_version: Some(5),
    };
    assert_eq!(reply.encode(), b);
    assert_eq!(Reply::decode(&b), Ok(reply));
}

#[test]
fn client_inbox_plaintext_and_signed_wrapper() {
    let b = vector("client INBOX plaintext");
    let m = ClientMessage {
        kind: ClientKind::Inbox,
        id: 42,
        json: br#"{"@type": "CancelOrder", "order_id": 1}"#.to_vec(),
    };
    assert_eq!(m.encode(), b);
    assert_eq!(ClientMessage::decode(&b), Ok(m));
    // The wrapper row: its first 8 bytes, then bytes 260..267.
    let row = "00000100555555552e2e2e0000003800000001";
    let wrapped = encode_signed(&[0x55; 256], &b);
    assert_eq!(hex::encode(&wrapped[..8]), row[..16]);
    assert_eq!(hex::encode(&wrapped[260..268]), row[22..]);
    let (sig, d) = decode_signed(&wrapped).expect("wrapper");
    assert_eq!((sig.len(), d), (256, &b[..]));
}

#[test]
fn server_messages_of_each_type() {
    let outbox = ServerMessage::Outbox {
        order: 6,
        timestamp: f64::from_bits(0x41d65a0bc0200000),
        json: br#"{"a": 1}"#.to_vec(),
    };
    assert_eq!(outbox.encode(None), Some(vector("server OUTBOX")));
    let rpc = ServerMessage::RpcResponse {
        request_id: 99,
        json: b"{}".to_vec(),
    };
    assert_eq!(rpc.encode(Some(2)), Some(vector("server RPC_RESPONSE")));
    let error = ServerMessage::Error {
        error_type: error_type::UNKNOWN,
        message: b"boom".to_vec(),
    };
    let v5 = vector("server ERROR v5");
    assert_eq!(error.encode(Some(5)), Some(v5.clone()));
    let v1: Vec<u8> = [&v5[..4], &v5[8..]].concat();
    assert_eq!(error.encode(None), Some(v1.clone()));
    assert_eq!(error.encode(Some(4)), Some(v1.clone()));
    assert_eq!(ServerMessage::decode(&v1, None), Ok(error.clone()));
    let throttling = ServerMessage::Throttling {
        level: 250,
        sequence_id: 42,
        order_id: 7,
    };
    assert_eq!(
        throttling.encode(Some(4)),
        Some(vector("server THROTTLING"))
    );
    for m in [outbox, rpc, error, throttling.clone()] {
        for v in [None, Some(2), Some(4), Some(5)] {
            if let Some(b) = m.encode(v) {
                assert_eq!(ServerMessage::decode(&b, v), Ok(m.clone()), "{m:?} v{v:?}");
            }
        }
    }
    assert_eq!(vector("hyper -1"), (-1i64).to_be_bytes());
}

#[test]
fn never_a_type_the_client_does_not_know() {
    let throttling = ServerMessage::Throttling {
        level: 1,
        sequence_id: 1,
        order_id: 1,
    };
    let broadcast = ServerMessage::Broadcast {
        json: b"{}".to_vec(),
    };
    for v in [None, Some(2), Some(3)] {
        assert_eq!(throttling.encode(v), None);
        assert_eq!(broadcast.encode(v), None);
    }
    assert!(throttling.encode(Some(4)).is_some());
    assert_eq!(broadcast.encode(Some(4)), None);
    assert!(broadcast.encode(Some(5)).is_some());
}

#[test]
fn malformed_messages_are_refused() {
    let v5 = vector("hello v5");
    assert!(Hello::decode(&v5[..20]).is_err(), "truncated");
    let mut extra = v5.clone();
    extra.extend_from_slice(&[0, 0, 0, 1]);
    assert_eq!(Hello::decode(&extra), Err(XdrError::Trailing));
    let mut short_key = Hello {
        client_id: "x".into(),
        last_seen_order: 0,
        client_key: key(),
        version: None,
    }
    .encode();
    short_key[19] = 16; // key length 16
    assert_eq!(
        Hello::decode(&short_key),
        Err(XdrError::Invalid("key size"))
    );
    let bad_id = Hello {
        client_id: "a b".into(),
        last_seen_order: 0,
        client_key: key(),
        version: None,
    };
    assert_eq!(
        Hello::decode(&bad_id.encode()),
        Err(XdrError::Invalid("client id"))
    );
    let mut m = vector("client INBOX plaintext");
    m[3] = 3;
    assert_eq!(
        ClientMessage::decode(&m),
        Err(XdrError::Invalid("message type"))
    );
}
