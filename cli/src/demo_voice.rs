//! The demo's voice channel: three users join a channel over the native protocol, bind their
//! UDP addresses with their join tokens, exchange 512-byte packets through the relay, and one
//! goes silent until the relay expires it.

use std::io;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use switchboard_core::hub::HubEvent;
use switchboard_core::relay::{JOIN_TOKEN_LEN, Operation, PACKET_LEN, packet};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::client::AdminClient;

use crate::admin::check;

struct Member {
    name: &'static str,
    uid: u64,
    socket: UdpSocket,
    heard: usize,
}

async fn call(admin: &mut AdminClient, make: impl FnOnce(u64) -> Body) -> io::Result<Body> {
    let rid = admin.request_id();
    check(admin.call(rid, make(rid), Duration::from_secs(10)).await?)
}

/// Runs the voice part of the demo; true when everything behaved.
pub async fn run(
    admin: &mut AdminClient,
    events: &async_channel::Receiver<HubEvent>,
    expiry: Duration,
) -> io::Result<bool> {
    let Body::CreateChannelResponse(ch) = call(admin, |r| {
        Body::CreateChannelRequest(pb::CreateChannelRequest { request_id: r })
    })
    .await?
    else {
        return Err(io::Error::other("unexpected answer to CreateChannel"));
    };
    let relay = format!("127.0.0.1:{}", ch.port);
    println!();
    println!("voice channel {} on UDP port {}", ch.chid, ch.port);
    let mut members = vec![];
    for name in ["alice", "bob", "carol"] {
        let Body::RegisterUserResponse(u) = call(admin, |r| {
            Body::RegisterUserRequest(pb::RegisterUserRequest {
                request_id: r,
                name: name.into(),
                permissions: 0,
            })
        })
        .await?
        else {
            return Err(io::Error::other("unexpected answer to RegisterUser"));
        };
        let Body::JoinChannelResponse(j) = call(admin, |r| {
            Body::JoinChannelRequest(pb::JoinChannelRequest {
                request_id: r,
                uid: u.uid,
                chid: ch.chid,
            })
        })
        .await?
        else {
            return Err(io::Error::other("unexpected answer to JoinChannel"));
        };
        let token: [u8; JOIN_TOKEN_LEN] = j
            .token
            .as_ref()
            .try_into()
            .map_err(|_| io::Error::other("no join token"))?;
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        // Bind the UDP address strongly: a JOIN system packet carrying the token.
        let mut join = [0u8; PACKET_LEN];
        packet::write_join(&mut join, u.uid, 0, &token).map_err(io::Error::other)?;
        socket.send_to(&join, &relay)?;
        println!(
            "  {name} (uid {}) joined and bound {} with its token",
            u.uid,
            socket.local_addr()?
        );
        members.push(Member {
            name,
            uid: u.uid,
            socket,
            heard: 0,
        });
    }
    async_io::Timer::after(Duration::from_millis(200)).await;

    // 25 rounds at 50 packets/s per talker (20 ms of audio each).
    let mut buf = [0u8; 1024];
    for round in 0..25u32 {
        for m in &members {
            let mut p = [0u8; PACKET_LEN];
            packet::write_user(&mut p, m.uid, &round.to_be_bytes()).map_err(io::Error::other)?;
            m.socket.send_to(&p, &relay)?;
        }
        async_io::Timer::after(Duration::from_millis(20)).await;
        for m in &mut members {
            while let Ok((n, _)) = m.socket.recv_from(&mut buf) {
                let from = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
                if n == PACKET_LEN && from != m.uid {
                    m.heard += 1;
                }
            }
        }
    }
    for m in &members {
        println!(
            "  {} heard {} of the 50 packets the two others sent",
            m.name, m.heard
        );
    }
    let all_heard = members.iter().all(|m| m.heard >= 40);

    // carol goes silent; alice and bob keep alive. The relay expires carol.
    println!("  carol goes silent; alice and bob send keepalives");
    let silent_from = Instant::now();
    let deadline = silent_from + expiry * 3;
    let carol = members[2].uid;
    let mut expired_after = None;
    while Instant::now() < deadline && expired_after.is_none() {
        for m in &members[..2] {
            let mut k = [0u8; PACKET_LEN];
            packet::write_system(&mut k, Operation::Keepalive, m.uid, 0)
                .map_err(io::Error::other)?;
            m.socket.send_to(&k, &relay)?;
        }
        async_io::Timer::after(Duration::from_millis(200)).await;
        while let Ok(e) = events.try_recv() {
            match e {
                HubEvent::MemberLeft {
                    uid, expired: true, ..
                } if uid == carol => expired_after = Some(silent_from.elapsed()),
                HubEvent::MemberLeft {
                    uid, expired: true, ..
                } => {
                    println!("  unexpected expiry of uid {uid}");
                    return Ok(false);
                }
                _ => {}
            }
        }
    }
    let Some(after) = expired_after else {
        println!("  carol was not expired");
        return Ok(false);
    };
    println!(
        "  carol expired after {:.1} s of silence (expiry set to {} s for the demo; 60 s by default)",
        after.as_secs_f64(),
        expiry.as_secs()
    );
    let Body::ListChannelsResponse(l) = call(admin, |r| {
        Body::ListChannelsRequest(pb::ListChannelsRequest {
            request_id: r,
            after_chid: 0,
        })
    })
    .await?
    else {
        return Err(io::Error::other("unexpected answer to ListChannels"));
    };
    let left: Vec<u64> = l
        .channels
        .iter()
        .find(|c| c.chid == ch.chid)
        .map(|c| c.members.clone())
        .unwrap_or_default();
    println!("  members now: {left:?}");
    Ok(all_heard && !left.contains(&carol) && left.len() == 2)
}
