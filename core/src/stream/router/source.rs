//! The source side of a group: its accept or refusal, and its data (latest data fanned out,
//! lossless data passed to the one sink within its credit).

use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::{Class, EndCode, Frame, Router, end_text};

impl Router {
    pub(super) fn source_accepted(&mut self, gid: u64, reverse_credit: u32) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.accepted {
            return;
        }
        g.accepted = true;
        let class = g.class;
        if class == Class::Lossless {
            g.reverse_credit = u64::from(reverse_credit);
        }
        let mut accepts = Vec::new();
        for (i, (leg, s)) in g.sinks.iter_mut().enumerate() {
            s.accepted = true;
            accepts.push((
                *leg,
                pb::StreamAccept {
                    request_id: s.request_id,
                    stream_id: leg.1,
                    initial_credit: if class == Class::Lossless {
                        reverse_credit
                    } else {
                        0
                    },
                    multicast: i > 0,
                    class: class as i32,
                },
            ));
        }
        for (leg, a) in accepts {
            self.send(leg.0, Body::StreamAccept(a));
        }
    }

    pub(super) fn source_rejected(&mut self, gid: u64, code: EndCode, reason: &str) {
        let Some(mut g) = self.groups.remove(&gid) else {
            return;
        };
        if g.accepted {
            // A reject after an accept: the same as a close.
            self.groups.insert(gid, g);
            if let Some(l) = self.groups.get_mut(&gid).and_then(|g| g.source.take()) {
                self.drop_leg(l);
            }
            return self.end_group(gid, code, reason, None);
        }
        if let Some(l) = g.source.take() {
            self.drop_leg(l);
        }
        self.unkey(&g);
        for (leg, s) in std::mem::take(&mut g.sinks) {
            self.drop_leg(leg);
            self.send(
                leg.0,
                Body::StreamReject(pb::StreamReject {
                    request_id: s.request_id,
                    stream_id: leg.1,
                    code: code as i32,
                    reason: reason.to_owned(),
                }),
            );
        }
    }

    pub(super) fn source_data(&mut self, now: Instant, gid: u64, d: pb::StreamData) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let len = d.payload.len() as u64;
        let protocol = |r: &mut Self, why: &str| {
            let why = format!("{}: {why}", end_text(EndCode::Protocol));
            r.end_group(
                gid,
                EndCode::Protocol,
                &why,
                Some((EndCode::Protocol, &why)),
            );
        };
        if !g.accepted {
            return protocol(self, "data before the accept");
        }
        match g.class {
            Class::Latest => {
                if len > g.source_credit {
                    return protocol(self, "data beyond the credit granted");
                }
                g.source_credit -= len;
                g.source_unacked += len;
                // The hub grants from its own buffer: frames are copied to every sink's queue
                // at once, so the room comes back at once (in batches of half the window).
                if g.source_unacked * 2 >= u64::from(self.limits.source_window)
                    && let Some((sc, sid)) = g.source
                {
                    let bytes = std::mem::take(&mut g.source_unacked);
                    g.source_credit += bytes;
                    self.send(
                        sc,
                        Body::StreamCredit(pb::StreamCredit {
                            stream_id: sid,
                            bytes,
                        }),
                    );
                }
                self.distribute(
                    now,
                    gid,
                    Frame {
                        sequence: d.sequence,
                        key_frame: d.key_frame,
                        channel: d.channel,
                        payload: d.payload,
                    },
                );
            }
            Class::Lossless => {
                // End to end: the sink's credit is the source's.
                let Some((&leg, s)) = g.sinks.iter_mut().next() else {
                    return;
                };
                if len > s.credit {
                    return protocol(self, "data beyond the credit granted");
                }
                s.credit -= len;
                s.bytes += len;
                s.frames += 1;
                g.bytes_in += len;
                g.frames_in += 1;
                if s.credit == 0 && g.stalled_since.is_none() {
                    g.stalled_since = Some(now);
                    self.wake.insert((now + self.limits.stall_timeout, gid));
                }
                self.delivered_total += len;
                self.send(
                    leg.0,
                    Body::StreamData(pb::StreamData {
                        stream_id: leg.1,
                        ..d
                    }),
                );
            }
        }
    }
}
