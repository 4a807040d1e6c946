//! Every KV control command and its errors, through a real `KvConn` into the hub.
#![allow(clippy::disallowed_methods)] // a base instant; time is then passed in

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::*;
use crate::hub::{ConnId, HubConfig, PeerInfo, StoredState, domain};
use crate::kv::codec::{KvRequest, SIGNATURE_LEN};
use crate::kv::{KvConfig, KvReply};
use crate::relay::RelayCommand;

struct Rig {
    hub: Hub,
    now: Instant,
    next: u64,
    changes: Vec<Change>,
    relay: Vec<RelayCommand>,
}

impl Rig {
    fn new() -> Rig {
        let now = Instant::now();
        let cfg = HubConfig {
            relay_ports: (40_000, 2),
            ..HubConfig::default()
        };
        let mut hub = Hub::new(cfg, 1, now, 1_700_000_000_000);
        hub.load(StoredState::default(), now);
        let mut r = Rig {
            hub,
            now,
            next: 100,
            changes: vec![],
            relay: vec![],
        };
        r.drain();
        r
    }

    fn drain(&mut self) -> Vec<u8> {
        let mut sent = Vec::new();
        while let Some(a) = self.hub.poll_action() {
            match a {
                HubAction::Send { bytes, .. } => sent.extend_from_slice(&bytes),
                HubAction::Persist(c) => self.changes.push(c),
                HubAction::Relay(c) => self.relay.push(c),
                _ => {}
            }
        }
        sent
    }

    /// One request on a fresh connection, as the reference client does; returns the reply.
    fn call(&mut self, req: KvRequest, padded: bool) -> Vec<u8> {
        self.call_cfg(req, padded, KvConfig::default(), None)
    }

    fn call_cfg(
        &mut self,
        req: KvRequest,
        padded: bool,
        cfg: KvConfig,
        signed: Option<(&[u8], u64)>,
    ) -> Vec<u8> {
        let conn = ConnId(self.next);
        self.next += 1;
        let peer = PeerInfo {
            addr: "127.0.0.1:4000".parse().expect("addr"),
            cert_name: None,
            cert: None,
            web: false,
        };
        self.hub.accept_kv(self.now, conn, peer, cfg);
        let mut b = BytesMut::new();
        match signed {
            Some((key, nonce)) => req.encode_signed(key, nonce, &mut b),
            None => req.encode(padded, &mut b),
        }
        self.hub.handle_input(self.now, conn, &b);
        self.drain()
    }

    fn ok(&mut self, req: KvRequest) -> u64 {
        let r = self.call(req, true);
        assert_eq!(r.len(), 8, "{req:?} answered {r:?}");
        let v = u64::from_be_bytes(r[..8].try_into().expect("8"));
        assert_ne!(v, 0, "{req:?} failed: {r:?}");
        v
    }

    fn err(&mut self, req: KvRequest) -> i32 {
        let r = self.call(req, false);
        assert_eq!(r.len(), 12, "{req:?} answered {r:?}");
        assert_eq!(&r[..8], &[0; 8], "{req:?} should fail");
        i32::from_be_bytes(r[8..12].try_into().expect("4"))
    }

    fn user(&mut self, perms: Permissions) -> u64 {
        let admin = self.hub.actor_of("admin").expect("admin").0;
        self.ok(KvRequest::Register {
            auid: admin,
            perm: perms.0,
        })
    }
}

const PARAM: i32 = 2;
const INVALID: i32 = 3;
const ACCESS: i32 = 4;

#[test]
fn admin_exists_after_load_and_open_registration_ignores_perm() {
    let mut r = Rig::new();
    let (admin, perms) = r.hub.actor_of("admin").expect("admin user created at load");
    assert_eq!(perms, Permissions::ADMIN);
    assert!(
        r.changes
            .iter()
            .any(|c| matches!(c, Change::UserRegistered(u) if u.uid == admin))
    );
    let uid = r.ok(KvRequest::Register {
        auid: 0,
        perm: Permissions::ADMIN.0,
    });
    assert_eq!(
        r.hub.kv_actor(uid).1,
        Permissions::NONE,
        "open registration ignores perm"
    );
    assert!(domain::valid_uid(uid));
}

#[test]
fn create_delete_channel_and_owner_rule() {
    let mut r = Rig::new();
    let creator = r.user(Permissions::ADD_CHANNEL);
    let nobody = r.user(Permissions::NONE);
    let remover = r.user(Permissions::RM_CHANNEL);
    assert_eq!(r.err(KvRequest::Create { uid: nobody }), ACCESS);
    assert_eq!(
        r.err(KvRequest::Create { uid: 999 }),
        PARAM,
        "unknown actor"
    );
    let ch = r.ok(KvRequest::Create { uid: creator });
    assert!(r.relay.contains(&RelayCommand::OpenChannel {
        channel: ch,
        port: 40_000
    }));
    assert!(
        r.changes
            .iter()
            .any(|c| matches!(c, Change::ChannelCreated(c) if c.chid == ch))
    );
    assert_eq!(r.ok(KvRequest::GetPort { chid: ch }), 40_000);
    assert_eq!(r.err(KvRequest::GetPort { chid: 77 }), PARAM);
    // Someone else without rm_channel may not delete; the owner may; so may rm_channel.
    assert_eq!(
        r.err(KvRequest::Delete {
            uid: nobody,
            chid: ch
        }),
        ACCESS
    );
    assert_eq!(
        r.ok(KvRequest::Delete {
            uid: creator,
            chid: ch
        }),
        ch
    );
    assert!(
        r.relay
            .contains(&RelayCommand::CloseChannel { channel: ch })
    );
    assert_eq!(
        r.err(KvRequest::Delete {
            uid: creator,
            chid: ch
        }),
        PARAM,
        "already gone"
    );
    let ch2 = r.ok(KvRequest::Create { uid: creator });
    assert_eq!(
        r.ok(KvRequest::Delete {
            uid: remover,
            chid: ch2
        }),
        ch2
    );
}

#[test]
fn ports_run_out_with_a_server_error() {
    let mut r = Rig::new();
    let u = r.user(Permissions::ADD_CHANNEL);
    r.ok(KvRequest::Create { uid: u });
    r.ok(KvRequest::Create { uid: u });
    assert_eq!(r.err(KvRequest::Create { uid: u }), 1);
}

#[test]
fn join_and_leave_rules() {
    let mut r = Rig::new();
    let owner = r.user(Permissions::ADD_CHANNEL);
    let alice = r.user(Permissions::NONE);
    let bob = r.user(Permissions::NONE);
    let adder = r.user(Permissions::ADD_USER);
    let kicker = r.user(Permissions::KICK_USER);
    let ch = r.ok(KvRequest::Create { uid: owner });
    assert_eq!(
        r.ok(KvRequest::Join {
            uid: alice,
            juid: alice,
            chid: ch
        }),
        40_000,
        "join returns the port"
    );
    assert!(r.relay.contains(&RelayCommand::Join {
        channel: ch,
        uid: alice,
        token: None
    }));
    assert_eq!(
        r.err(KvRequest::Join {
            uid: alice,
            juid: alice,
            chid: ch
        }),
        INVALID,
        "already in"
    );
    assert_eq!(
        r.err(KvRequest::Join {
            uid: alice,
            juid: bob,
            chid: ch
        }),
        ACCESS,
        "others need add_user"
    );
    assert_eq!(
        r.ok(KvRequest::Join {
            uid: adder,
            juid: bob,
            chid: ch
        }),
        40_000
    );
    assert_eq!(
        r.err(KvRequest::Join {
            uid: alice,
            juid: alice,
            chid: 999
        }),
        PARAM
    );
    assert_eq!(
        r.err(KvRequest::Join {
            uid: adder,
            juid: 999,
            chid: ch
        }),
        PARAM
    );
    assert_eq!(
        r.err(KvRequest::Leave {
            uid: alice,
            luid: bob,
            chid: ch
        }),
        ACCESS,
        "others need kick_user"
    );
    assert_eq!(
        r.ok(KvRequest::Leave {
            uid: kicker,
            luid: bob,
            chid: ch
        }),
        1
    );
    assert_eq!(
        r.ok(KvRequest::Leave {
            uid: alice,
            luid: alice,
            chid: ch
        }),
        1,
        "leave returns 1"
    );
    assert_eq!(
        r.err(KvRequest::Leave {
            uid: alice,
            luid: alice,
            chid: ch
        }),
        INVALID,
        "not a member"
    );
    assert!(r.relay.contains(&RelayCommand::Leave {
        channel: ch,
        uid: alice
    }));
    assert!(r.changes.contains(&Change::MemberLeft {
        chid: ch,
        uid: alice
    }));
}

#[test]
fn register_and_unregister_rules() {
    let mut r = Rig::new();
    let registrar = r.user(Permissions::REGISTER_USER);
    let deleter = r.user(Permissions::DELETE_USER);
    let plain = r.user(Permissions::NONE);
    let made = r.ok(KvRequest::Register {
        auid: registrar,
        perm: Permissions::ADD_CHANNEL.0,
    });
    assert_eq!(r.hub.kv_actor(made).1, Permissions::ADD_CHANNEL);
    assert_eq!(
        r.err(KvRequest::Register {
            auid: plain,
            perm: 0
        }),
        ACCESS
    );
    assert_eq!(
        r.err(KvRequest::Unregister {
            auid: plain,
            uid: made
        }),
        ACCESS
    );
    assert_eq!(
        r.ok(KvRequest::Unregister {
            auid: deleter,
            uid: made
        }),
        made
    );
    assert_eq!(
        r.ok(KvRequest::Unregister {
            auid: plain,
            uid: plain
        }),
        plain,
        "yourself needs nothing"
    );
    assert_eq!(
        r.err(KvRequest::Unregister {
            auid: deleter,
            uid: plain
        }),
        PARAM,
        "already gone"
    );
    assert!(r.changes.contains(&Change::UserRemoved { uid: plain }));
}

#[test]
fn unregistering_a_member_removes_its_memberships() {
    let mut r = Rig::new();
    let owner = r.user(Permissions::ADD_CHANNEL);
    let alice = r.user(Permissions::NONE);
    let ch = r.ok(KvRequest::Create { uid: owner });
    r.ok(KvRequest::Join {
        uid: alice,
        juid: alice,
        chid: ch,
    });
    r.ok(KvRequest::Unregister {
        auid: alice,
        uid: alice,
    });
    assert!(r.relay.contains(&RelayCommand::Leave {
        channel: ch,
        uid: alice
    }));
    assert!(r.hub.channels()[0].1.is_empty());
}

#[test]
fn get_channels_layout() {
    let mut r = Rig::new();
    let owner = r.user(Permissions::ADD_CHANNEL);
    let a = r.ok(KvRequest::Create { uid: owner });
    let b = r.ok(KvRequest::Create { uid: owner });
    let reply = r.call(KvRequest::GetChannels, true);
    let mut want = BytesMut::new();
    KvReply::Channels(vec![a, b]).encode(&mut want);
    assert_eq!(reply, want.to_vec());
}

#[test]
fn uids_never_have_an_all_ones_half() {
    assert!(!domain::valid_uid(0));
    assert!(!domain::valid_uid(0xFFFF_FFFF));
    assert!(!domain::valid_uid(0xFFFF_FFFF_0000_0001));
    assert!(domain::valid_uid(0x1_0000_0000));
    let mut r = Rig::new();
    r.hub.domain.next_uid = 0xFFFF_FFFE;
    let uid = r.ok(KvRequest::Register { auid: 0, perm: 0 });
    assert_eq!(uid, 0x1_0000_0000, "0xFFFFFFFF is skipped");
}

#[test]
fn persisted_before_acknowledged() {
    let mut r = Rig::new();
    let owner = r.user(Permissions::ADD_CHANNEL);
    let conn = ConnId(5);
    r.hub.accept_kv(
        r.now,
        conn,
        PeerInfo {
            addr: "127.0.0.1:1".parse().expect("addr"),
            cert_name: None,
            cert: None,
            web: false,
        },
        KvConfig::default(),
    );
    let mut b = BytesMut::new();
    KvRequest::Create { uid: owner }.encode(false, &mut b);
    r.hub.handle_input(r.now, conn, &b);
    let mut order = vec![];
    while let Some(a) = r.hub.poll_action() {
        match a {
            HubAction::Persist(Change::EventLogged(_)) => order.push("event"),
            HubAction::Persist(_) => order.push("persist"),
            HubAction::Send { .. } => order.push("send"),
            HubAction::Relay(_) => order.push("relay"),
            _ => {}
        }
    }
    assert_eq!(order, vec!["persist", "relay", "event", "send"]);
}

#[test]
fn signed_front_refuses_unsigned_stale_replayed_and_foreign_tags() {
    let mut r = Rig::new();
    let owner = r.user(Permissions::ADD_CHANNEL);
    let key = hex::decode(r.hub.control_key(owner).expect("key")).expect("hex");
    let cfg = KvConfig {
        require_signature: true,
        ..KvConfig::default()
    };
    let wall = r.hub.unix_ms(r.now) as u64;
    let reply = r.call_cfg(
        KvRequest::Create { uid: owner },
        false,
        cfg.clone(),
        Some((&key, wall)),
    );
    assert_eq!(reply.len(), 8, "good signature accepted: {reply:?}");
    let replay = r.call_cfg(
        KvRequest::Create { uid: owner },
        false,
        cfg.clone(),
        Some((&key, wall)),
    );
    assert_eq!(&replay[8..], &[0, 0, 0, 4], "replayed nonce refused");
    let stale = r.call_cfg(
        KvRequest::Create { uid: owner },
        false,
        cfg.clone(),
        Some((&key, wall - 600_000)),
    );
    assert_eq!(&stale[8..], &[0, 0, 0, 4], "stale nonce refused");
    let foreign = r.call_cfg(
        KvRequest::Create { uid: owner },
        false,
        cfg.clone(),
        Some((b"not the key", wall + 1)),
    );
    assert_eq!(&foreign[8..], &[0, 0, 0, 4], "foreign key refused");
    // An unsigned request on a signed front waits for its trailer and times out.
    let conn = ConnId(9_999);
    r.hub.accept_kv(
        r.now,
        conn,
        PeerInfo {
            addr: "10.0.0.1:1".parse().expect("addr"),
            cert_name: None,
            cert: None,
            web: false,
        },
        cfg,
    );
    let mut b = BytesMut::new();
    KvRequest::Create { uid: owner }.encode(false, &mut b);
    r.hub.handle_input(r.now, conn, &b);
    assert!(r.drain().is_empty());
    r.hub.handle_timeout(r.now + Duration::from_secs(11));
    let mut closed = false;
    while let Some(a) = r.hub.poll_action() {
        closed |= matches!(a, HubAction::Close { conn: c, .. } if c == conn);
    }
    assert!(closed);
    assert_eq!(SIGNATURE_LEN, 40);
}

#[test]
fn state_survives_a_reload() {
    let mut r = Rig::new();
    let owner = r.user(Permissions::ADD_CHANNEL);
    let alice = r.user(Permissions::NONE);
    let ch = r.ok(KvRequest::Create { uid: owner });
    r.ok(KvRequest::Join {
        uid: alice,
        juid: alice,
        chid: ch,
    });
    // Rebuild the stored state from the persisted changes, as a store would.
    let mut st = StoredState::default();
    for c in &r.changes {
        match c {
            Change::UserRegistered(u) => st.users.push(u.clone()),
            Change::ChannelCreated(c) => st.channels.push(c.clone()),
            Change::MemberJoined { chid, uid } => st.members.push((*chid, *uid)),
            _ => {}
        }
    }
    let mut hub = Hub::new(HubConfig::default(), 2, r.now, 0);
    hub.load(st, r.now);
    let mut relay = vec![];
    let mut new_users = 0;
    while let Some(a) = hub.poll_action() {
        match a {
            HubAction::Relay(c) => relay.push(c),
            HubAction::Persist(Change::UserRegistered(_)) => new_users += 1,
            _ => {}
        }
    }
    assert_eq!(new_users, 0, "the admin is not created twice");
    assert!(relay.contains(&RelayCommand::OpenChannel {
        channel: ch,
        port: 40_000
    }));
    assert!(relay.contains(&RelayCommand::Join {
        channel: ch,
        uid: alice,
        token: None
    }));
    assert_eq!(hub.channels()[0].1, vec![alice]);
    assert_eq!(hub.kv_actor(owner).1, Permissions::ADD_CHANNEL);
}
