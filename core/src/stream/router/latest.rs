//! The data path of `latest` groups: a frame into every sink's bounded queue (or straight out
//! when the sink has credit and nothing queued), dropping to the newest key frame on overflow,
//! and resync requests coalesced per group.

use std::collections::VecDeque;
use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::{Frame, Leg, Router, RouterOutput, Sink};

impl Router {
    /// A latest frame into every sink's queue (the cached key frame too), then out as far as
    /// each sink's credit goes.
    pub(super) fn distribute(&mut self, now: Instant, gid: u64, f: Frame) {
        let cap = self.limits.sink_queue;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let len = f.payload.len();
        g.bytes_in += len as u64;
        g.frames_in += 1;
        if f.key_frame {
            g.cached_key = Some(f.clone());
        }
        let mut need_resync = false;
        let mut dropped = 0u64;
        let legs: Vec<Leg> = g.sinks.keys().copied().collect();
        for leg in legs {
            let Some(s) = g.sinks.get_mut(&leg) else {
                continue;
            };
            if !s.accepted {
                continue;
            }
            if s.awaiting_key {
                if !f.key_frame {
                    s.dropped += 1;
                    dropped += 1;
                    continue;
                }
                s.awaiting_key = false;
            }
            // Fast path: room now and nothing queued: straight out.
            if s.queue.is_empty() && s.credit >= len as u64 {
                s.credit -= len as u64;
                s.bytes += len as u64;
                s.frames += 1;
                self.delivered_total += len as u64;
                self.out.push_back(RouterOutput::Send {
                    conn: leg.0,
                    body: data_body(leg.1, &f),
                });
                continue;
            }
            s.queue.push_back(f.clone());
            s.queued += len;
            if s.queued > cap {
                let before = s.queue.len();
                // Keep from the newest key frame when that fits; else drop all and wait.
                let keep_from = s.queue.iter().rposition(|q| q.key_frame);
                let kept: usize = keep_from
                    .map(|i| s.queue.iter().skip(i).map(|q| q.payload.len()).sum())
                    .unwrap_or(usize::MAX);
                match keep_from {
                    Some(i) if kept <= cap => {
                        s.queue.drain(..i);
                        s.queued = kept;
                    }
                    _ => {
                        s.queue.clear();
                        s.queued = 0;
                        s.awaiting_key = true;
                    }
                }
                // Either way, ask the source for a fresh key frame (coalesced per group).
                need_resync = true;
                let n = (before - s.queue.len()) as u64;
                s.dropped += n;
                dropped += n;
            }
            Self::flush_sink(&mut self.out, &mut self.delivered_total, leg, s);
        }
        self.dropped_total += dropped;
        if need_resync {
            self.request_resync(now, gid);
        }
    }

    pub(super) fn flush(&mut self, gid: u64, leg: Leg) {
        let Some(s) = self
            .groups
            .get_mut(&gid)
            .and_then(|g| g.sinks.get_mut(&leg))
        else {
            return;
        };
        Self::flush_sink(&mut self.out, &mut self.delivered_total, leg, s);
    }

    fn flush_sink(out: &mut VecDeque<RouterOutput>, total: &mut u64, leg: Leg, s: &mut Sink) {
        while let Some(f) = s.queue.front() {
            let len = f.payload.len() as u64;
            if len > s.credit {
                break;
            }
            let Some(f) = s.queue.pop_front() else {
                break;
            };
            s.credit -= len;
            s.queued -= f.payload.len();
            s.bytes += len;
            s.frames += 1;
            *total += len;
            out.push_back(RouterOutput::Send {
                conn: leg.0,
                body: data_body(leg.1, &f),
            });
        }
    }

    /// Asks the source for a key frame, at most once per `resync_interval` per group.
    pub(super) fn request_resync(&mut self, now: Instant, gid: u64) {
        let interval = self.limits.resync_interval;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if let Some(last) = g.last_resync
            && now < last + interval
        {
            if !g.resync_pending {
                g.resync_pending = true;
                self.wake.insert((last + interval, gid));
            }
            return;
        }
        g.last_resync = Some(now);
        g.resync_pending = false;
        match g.source {
            Some((sc, sid)) => {
                self.send(sc, Body::StreamResync(pb::StreamResync { stream_id: sid }))
            }
            None => self
                .out
                .push_back(RouterOutput::HubSourceResync { group: gid }),
        }
    }
}

pub(super) fn data_body(stream_id: u64, f: &Frame) -> Body {
    Body::StreamData(pb::StreamData {
        stream_id,
        sequence: f.sequence,
        key_frame: f.key_frame,
        channel: f.channel,
        payload: f.payload.clone(),
    })
}
