//! The streams of one agent connection: the core [`StreamEndpoint`] (credit, ids, protocol
//! checks) beside the [`AgentLink`], and the running sources.

use std::collections::HashMap;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use switchboard_core::link::AgentLink;
use switchboard_core::machine::Action;
use switchboard_core::stream::{
    Class, SendOutcome, Side, StreamEndpoint, StreamEvent, StreamLimits,
};
use switchboard_proto::message::Message as Body;

use super::{RunningSource, SourceCtl, SourceMsg, SourceOptions, start};

/// A lossless chunk waiting for credit, and who waits for it.
struct Blocked {
    channel: u32,
    payload: Bytes,
    ready: Option<Sender<()>>,
}

/// The stream side of an agent connection.
pub struct AgentStreams {
    ep: StreamEndpoint,
    opts: SourceOptions,
    running: HashMap<u64, RunningSource>,
    blocked: HashMap<u64, Blocked>,
    tx: Sender<SourceMsg>,
    rx: Receiver<SourceMsg>,
}

impl AgentStreams {
    /// No stream yet.
    pub fn new(opts: SourceOptions) -> Self {
        let (tx, rx) = async_channel::unbounded();
        AgentStreams {
            ep: StreamEndpoint::new(Side::Client, StreamLimits::default()),
            opts,
            running: HashMap::new(),
            blocked: HashMap::new(),
            tx,
            rx,
        }
    }

    /// Where the sources' messages arrive (wait on it beside the socket).
    pub fn receiver(&self) -> Receiver<SourceMsg> {
        self.rx.clone()
    }

    /// Number of streams running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// True when none runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// A stream message from the hub.
    pub fn on_message(&mut self, now: Instant, body: Body) {
        let _ = self.ep.handle_message(now, body);
    }

    /// A source's message.
    pub fn on_source(&mut self, msg: SourceMsg) {
        match msg {
            SourceMsg::Data {
                id,
                channel,
                key_frame,
                payload,
                ready,
            } => {
                if !self.running.contains_key(&id) {
                    return;
                }
                self.send(id, channel, key_frame, payload, ready);
            }
            SourceMsg::Consumed { id, bytes } => {
                let _ = self.ep.consume(id, bytes);
            }
            SourceMsg::End { id, code, reason } => {
                if self.running.remove(&id).is_some() {
                    self.blocked.remove(&id);
                    let _ = self.ep.close(id, code, &reason);
                }
            }
        }
    }

    /// Performs what the endpoint asks: frames through the link, opens started or refused,
    /// input to the sources. Returns whether anything happened.
    pub fn drain(&mut self, link: &mut AgentLink) -> bool {
        let mut any = false;
        while let Some(a) = self.ep.poll_action() {
            any = true;
            match a {
                Action::Send(frame) => {
                    let _ = link.send_frame(frame);
                }
                Action::Event(e) => self.on_event(e),
                Action::Close(_) | Action::Timer(_) => {}
            }
        }
        any
    }

    /// The connection ended: every source stops (a shell's process is killed).
    pub fn stop_all(&mut self) {
        self.running.clear();
        self.blocked.clear();
        self.ep.handle_transport_closed("connection ended");
        while self.ep.poll_action().is_some() {}
    }

    fn on_event(&mut self, e: StreamEvent) {
        match e {
            StreamEvent::Incoming { id, open } => {
                match start(id, &open, &self.opts, self.tx.clone()) {
                    Ok(src) => {
                        tracing::info!(id, kind = %open.kind, for_ = %open.opened_by, "stream source started");
                        self.running.insert(id, src);
                        let _ = self.ep.accept(id, 0);
                    }
                    Err((code, why)) => {
                        tracing::info!(id, kind = %open.kind, %why, "stream refused");
                        let _ = self.ep.reject(id, code, &why);
                    }
                }
            }
            StreamEvent::Data {
                id,
                channel,
                payload,
                ..
            } => match self.running.get(&id) {
                // The sink's own data (shell input): credited back once the source used it.
                Some(src) if src.class == Class::Lossless => {
                    let _ = src.ctl.try_send(SourceCtl::Input { channel, payload });
                }
                _ => {
                    let _ = self.ep.consume(id, payload.len());
                }
            },
            StreamEvent::Writable { id } => {
                if let Some(b) = self.blocked.remove(&id) {
                    self.send(id, b.channel, false, b.payload, b.ready);
                }
            }
            StreamEvent::ResyncRequested { id } => {
                if let Some(src) = self.running.get(&id) {
                    let _ = src.ctl.try_send(SourceCtl::Resync);
                }
            }
            StreamEvent::Closed { id, code, reason } => {
                if self.running.remove(&id).is_some() {
                    tracing::info!(id, ?code, %reason, "stream closed");
                }
                self.blocked.remove(&id);
            }
            StreamEvent::Accepted { .. } | StreamEvent::Rejected { .. } => {}
        }
    }

    /// Sends as much of a chunk as the credit allows; a lossless rest waits for `Writable`,
    /// and its source with it.
    fn send(
        &mut self,
        id: u64,
        channel: u32,
        key_frame: bool,
        mut payload: Bytes,
        ready: Option<Sender<()>>,
    ) {
        let lossless = self
            .running
            .get(&id)
            .is_some_and(|s| s.class == Class::Lossless);
        if !lossless {
            if let Ok(SendOutcome::Dropped) = self.ep.send_data(id, channel, key_frame, payload) {
                tracing::debug!(id, "latest frame dropped: no credit");
            }
            if let Some(r) = ready {
                let _ = r.try_send(());
            }
            return;
        }
        while !payload.is_empty() {
            let room = self.ep.send_capacity(id);
            if room == 0 {
                // No credit: this returns Blocked and makes the endpoint say Writable later.
                let _ = self.ep.send_data(id, channel, false, payload.slice(..1));
                self.blocked.insert(
                    id,
                    Blocked {
                        channel,
                        payload,
                        ready,
                    },
                );
                return;
            }
            let piece = payload.split_to(room.min(payload.len()));
            if self.ep.send_data(id, channel, false, piece).is_err() {
                return; // closed meanwhile: the source stops when it is dropped
            }
        }
        if let Some(r) = ready {
            let _ = r.try_send(());
        }
    }
}
