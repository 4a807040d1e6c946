//! One end of the streams of one connection: the machine an agent (sources) and an operator
//! client (sinks) run beside their link.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::{Class, EndCode, StreamLimits, end_text, validate_open};
use crate::link::{FrameDecoder, frame, msg};
use crate::machine::{Action, CloseReason};

/// Which end of the connection this endpoint is: it decides the parity of the ids it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The connecting side (agent, operator): opens even ids.
    Client,
    /// The accepting side (the hub, or the source end of a local stream): opens odd ids.
    Server,
}

/// What an endpoint asks for when it opens a stream (it becomes the stream's sink).
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// Stream kind ("metrics", "tail", "shell", "hub.stats").
    pub kind: String,
    /// The source agent; empty for the hub (or the local source).
    pub agent_id: String,
    /// Multicast key (latest class); empty: derived from the parameters.
    pub key: String,
    /// Delivery class.
    pub class: Class,
    /// Credit granted to the source up front (0: the default window).
    pub window: u32,
    /// Kind-specific parameters.
    pub params: BTreeMap<String, String>,
}

/// What happened to a [`StreamEndpoint::send_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Sent (queued as an action).
    Sent,
    /// Lossless: not enough credit; nothing was sent. Wait for [`StreamEvent::Writable`].
    Blocked,
    /// Latest: not enough credit; the frame was dropped and the next one must be a key frame
    /// to be sent.
    Dropped,
}

/// Misuse of a stream's API (never caused by the network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No such open stream.
    #[error("no open stream {0}")]
    Unknown(u64),
    /// The payload is larger than one StreamData may carry.
    #[error("payload of {0} bytes is larger than a stream frame")]
    TooLarge(usize),
    /// The stream is not open yet (no accept), or this end may not send on it.
    #[error("stream {0} cannot send now")]
    NotWritable(u64),
    /// Too many streams on this connection.
    #[error("too many streams on this connection")]
    Limit,
    /// The connection is closed.
    #[error("connection is closed")]
    Closed,
}

/// What an endpoint reports.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The peer asks this end to be the source of a stream: call
    /// [`StreamEndpoint::accept`] or [`StreamEndpoint::reject`].
    Incoming {
        /// Stream id.
        id: u64,
        /// The open as it came (kind, params, class, who it is for).
        open: pb::StreamOpen,
    },
    /// A stream this end opened was accepted.
    Accepted {
        /// Stream id.
        id: u64,
        /// It joined a source that was already running for other sinks.
        multicast: bool,
    },
    /// A stream this end opened was refused.
    Rejected {
        /// Stream id.
        id: u64,
        /// Why.
        code: EndCode,
        /// Details.
        reason: String,
    },
    /// An event of a stream. Call [`StreamEndpoint::consume`] once it is used.
    Data {
        /// Stream id.
        id: u64,
        /// The source's sequence number (gaps: skipped data of a latest stream).
        sequence: u64,
        /// A key frame: usable without what came before.
        key_frame: bool,
        /// 0 data, 1 control.
        channel: u32,
        /// The payload.
        payload: Bytes,
    },
    /// A blocked lossless stream has credit again.
    Writable {
        /// Stream id.
        id: u64,
    },
    /// The sink (or the hub) asks for a fresh key frame.
    ResyncRequested {
        /// Stream id.
        id: u64,
    },
    /// The stream ended (either end, or the connection).
    Closed {
        /// Stream id.
        id: u64,
        /// Why.
        code: EndCode,
        /// Details.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Sink,
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Opened by this end, no answer yet.
    Opening,
    /// Asked of this end, not accepted yet.
    Incoming,
    Open,
}

#[derive(Debug)]
struct Entry {
    role: Role,
    class: Class,
    state: State,
    /// Payload bytes this end may still send.
    send_credit: u64,
    /// Payload bytes the peer may still send us (granted and not arrived).
    recv_credit: u64,
    /// Bytes consumed and not credited back yet.
    consumed: u64,
    /// The window this end grants (credit goes back once a quarter of it is consumed).
    window: u64,
    next_seq: u64,
    /// Latest source that dropped a frame: only a key frame may follow.
    need_key: bool,
    /// Lossless sender that was refused for credit: say when it can write again.
    blocked: bool,
}

/// The streams of one connection, seen from one end.
///
/// # Driving contract
///
/// - Give it every stream message that arrives, [`handle_message`](Self::handle_message) (it
///   hands back anything that is not a stream message), or raw frames with
///   [`handle_input`](Self::handle_input) (a leg that carries only streams).
/// - Drain [`poll_action`](Self::poll_action): `Send` is one framed `Message` to write on the
///   connection, in order; `Event` is a [`StreamEvent`]; `Close` comes only from
///   `handle_input` on undecodable bytes. It has no timers (`poll_timeout` is always `None`).
/// - When the connection ends call [`handle_transport_closed`](Self::handle_transport_closed):
///   every stream reports `Closed`.
///
/// ```no_run
/// # use switchboard_core::stream::*;
/// # use switchboard_core::machine::Action;
/// # fn write(_: &[u8]) {}
/// let mut ep = StreamEndpoint::new(Side::Client, StreamLimits::default());
/// let id = ep.open(OpenRequest { kind: "metrics".into(), agent_id: "a1".into(),
///     class: Class::Latest, ..Default::default() }).unwrap();
/// while let Some(a) = ep.poll_action() {
///     match a {
///         Action::Send(bytes) => write(&bytes),
///         Action::Event(StreamEvent::Data { id, payload, .. }) => {
///             println!("{} bytes", payload.len());
///             ep.consume(id, payload.len()).ok();
///         }
///         other => println!("{other:?}"),
///     }
/// }
/// # let _ = id;
/// ```
#[derive(Debug)]
pub struct StreamEndpoint {
    side: Side,
    limits: StreamLimits,
    next_id: u64,
    streams: BTreeMap<u64, Entry>,
    out: VecDeque<Action<StreamEvent>>,
    decoder: FrameDecoder,
    closed: bool,
}

impl StreamEndpoint {
    /// An endpoint on the `side` end of a connection.
    pub fn new(side: Side, limits: StreamLimits) -> Self {
        let max = limits.max_payload + crate::link::FRAME_MARGIN;
        StreamEndpoint {
            side,
            next_id: match side {
                Side::Client => 2,
                Side::Server => 1,
            },
            limits,
            streams: BTreeMap::new(),
            out: VecDeque::new(),
            decoder: FrameDecoder::new(max),
            closed: false,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// Number of streams open or opening.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when no stream is open.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Opens a stream whose sink is this end. The answer comes as `Accepted` or `Rejected`.
    pub fn open(&mut self, req: OpenRequest) -> Result<u64, StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        if self.streams.len() >= self.limits.max_per_conn {
            return Err(StreamError::Limit);
        }
        let id = self.next_id;
        self.next_id += 2;
        let window = self.window_of(req.window);
        self.streams.insert(
            id,
            Entry {
                role: Role::Sink,
                class: req.class,
                state: State::Opening,
                send_credit: 0,
                recv_credit: window,
                consumed: 0,
                window,
                next_seq: 1,
                need_key: false,
                blocked: false,
            },
        );
        self.send(Body::StreamOpen(Box::new(pb::StreamOpen {
            request_id: 0,
            stream_id: id,
            kind: req.kind,
            agent_id: req.agent_id,
            key: req.key,
            class: req.class as i32,
            initial_credit: window as u32,
            params: req.params,
            opened_by: String::new(),
        })));
        Ok(id)
    }

    /// Accepts an `Incoming` stream: this end is its source. `window`: credit for the sink's
    /// own data (shell keystrokes), 0 for the default; a latest stream takes none.
    pub fn accept(&mut self, id: u64, window: u32) -> Result<(), StreamError> {
        let default = self.window_of(window);
        let e = self.entry(id)?;
        if e.state != State::Incoming {
            return Err(StreamError::NotWritable(id));
        }
        e.state = State::Open;
        let grant = if e.class == Class::Latest { 0 } else { default };
        e.recv_credit = grant;
        e.window = grant;
        let class = e.class;
        self.send(Body::StreamAccept(pb::StreamAccept {
            request_id: 0,
            stream_id: id,
            initial_credit: grant as u32,
            multicast: false,
            class: class as i32,
        }));
        Ok(())
    }

    /// Refuses an `Incoming` stream.
    pub fn reject(&mut self, id: u64, code: EndCode, reason: &str) -> Result<(), StreamError> {
        let e = self.entry(id)?;
        if e.state != State::Incoming {
            return Err(StreamError::NotWritable(id));
        }
        self.streams.remove(&id);
        self.send(Body::StreamReject(pb::StreamReject {
            request_id: 0,
            stream_id: id,
            code: code as i32,
            reason: reason.into(),
        }));
        Ok(())
    }

    /// Payload bytes this end may send on `id` now (0 when not open).
    pub fn send_capacity(&self, id: u64) -> usize {
        match self.streams.get(&id) {
            Some(e) if e.state == State::Open && self.may_send(e) => {
                e.send_credit.min(self.limits.max_payload as u64) as usize
            }
            _ => 0,
        }
    }

    /// Sends one event on `id` (a source's data, or a lossless sink's own data such as
    /// keystrokes). See [`SendOutcome`] for what happens without credit.
    pub fn send_data(
        &mut self,
        id: u64,
        channel: u32,
        key_frame: bool,
        payload: Bytes,
    ) -> Result<SendOutcome, StreamError> {
        if payload.len() > self.limits.max_payload {
            return Err(StreamError::TooLarge(payload.len()));
        }
        let e = self.streams.get(&id).ok_or(StreamError::Unknown(id))?;
        if e.state != State::Open || !self.may_send(e) {
            return Err(StreamError::NotWritable(id));
        }
        let e = self.entry(id)?;
        let len = payload.len() as u64;
        if e.send_credit < len {
            return Ok(match e.class {
                Class::Lossless => {
                    e.blocked = true;
                    SendOutcome::Blocked
                }
                Class::Latest => {
                    e.need_key = true;
                    e.next_seq += 1; // the sink sees the gap
                    SendOutcome::Dropped
                }
            });
        }
        if e.need_key && !key_frame {
            e.next_seq += 1;
            return Ok(SendOutcome::Dropped);
        }
        e.need_key = false;
        e.send_credit -= len;
        let sequence = e.next_seq;
        e.next_seq += 1;
        self.send(Body::StreamData(pb::StreamData {
            stream_id: id,
            sequence,
            key_frame,
            channel,
            payload,
        }));
        Ok(SendOutcome::Sent)
    }

    /// The owner used `n` bytes of payload received on `id`: credit goes back to the sender
    /// once a quarter of the window is used.
    pub fn consume(&mut self, id: u64, n: usize) -> Result<(), StreamError> {
        let e = self.entry(id)?;
        e.consumed += n as u64;
        if e.consumed * 4 >= e.window.max(1) {
            let bytes = std::mem::take(&mut e.consumed);
            e.recv_credit += bytes;
            self.send(Body::StreamCredit(pb::StreamCredit {
                stream_id: id,
                bytes,
            }));
        }
        Ok(())
    }

    /// Asks the source of `id` (a stream this end is the sink of) for a fresh key frame.
    pub fn resync(&mut self, id: u64) -> Result<(), StreamError> {
        self.entry(id)?;
        self.send(Body::StreamResync(pb::StreamResync { stream_id: id }));
        Ok(())
    }

    /// Closes `id` (either role).
    pub fn close(&mut self, id: u64, code: EndCode, reason: &str) -> Result<(), StreamError> {
        self.streams.remove(&id).ok_or(StreamError::Unknown(id))?;
        self.send(Body::StreamClose(pb::StreamClose {
            stream_id: id,
            code: code as i32,
            reason: reason.into(),
        }));
        Ok(())
    }

    /// Raw frames of a leg that carries only stream messages (a local leg).
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.closed {
            return;
        }
        self.decoder.push(data);
        loop {
            match self.decoder.next_message() {
                Ok(None) => break,
                Ok(Some(m)) => match msg::body(m) {
                    Ok(body) => {
                        if let Some(other) = self.handle_message(now, body) {
                            return self.fail(format!(
                                "unexpected {:?} on a stream leg",
                                msg::type_of(&other)
                            ));
                        }
                    }
                    Err(e) => return self.fail(e),
                },
                Err(e) => return self.fail(e.to_string()),
            }
        }
    }

    /// A message that arrived. Returns it back when it is not a stream message.
    pub fn handle_message(&mut self, _now: Instant, body: Body) -> Option<Body> {
        match body {
            Body::StreamOpen(o) => self.on_open(*o),
            Body::StreamAccept(a) => {
                let e = self.streams.get_mut(&a.stream_id)?;
                if e.state != State::Opening {
                    return self.protocol_close(a.stream_id, "accept of a stream already open");
                }
                e.state = State::Open;
                e.send_credit = u64::from(a.initial_credit).min(self.limits.max_window);
                if let Ok(c) = Class::try_from(a.class) {
                    e.class = c;
                }
                self.event(StreamEvent::Accepted {
                    id: a.stream_id,
                    multicast: a.multicast,
                });
            }
            Body::StreamReject(r) => {
                if self
                    .streams
                    .get(&r.stream_id)
                    .is_some_and(|e| e.state == State::Opening)
                {
                    self.streams.remove(&r.stream_id);
                    self.event(StreamEvent::Rejected {
                        id: r.stream_id,
                        code: EndCode::try_from(r.code).unwrap_or(EndCode::Protocol),
                        reason: r.reason,
                    });
                }
            }
            Body::StreamData(d) => {
                let id = d.stream_id;
                let Some(e) = self.streams.get_mut(&id) else {
                    return None; // closed already: late data is dropped
                };
                let len = d.payload.len() as u64;
                if e.state != State::Open {
                    return self.protocol_close(id, "data before the stream was open");
                }
                if e.role == Role::Source && e.class == Class::Latest {
                    return self.protocol_close(id, "data from the sink of a latest stream");
                }
                if len > e.recv_credit {
                    return self.protocol_close(id, "data beyond the credit granted");
                }
                e.recv_credit -= len;
                self.event(StreamEvent::Data {
                    id,
                    sequence: d.sequence,
                    key_frame: d.key_frame,
                    channel: d.channel,
                    payload: d.payload,
                });
            }
            Body::StreamCredit(c) => {
                let max = self.limits.max_window;
                let e = self.streams.get_mut(&c.stream_id)?;
                e.send_credit = e.send_credit.saturating_add(c.bytes);
                if e.send_credit > max.saturating_mul(2) {
                    return self.protocol_close(c.stream_id, "credit above the largest window");
                }
                if std::mem::take(&mut e.blocked) {
                    self.event(StreamEvent::Writable { id: c.stream_id });
                }
            }
            Body::StreamResync(r) => {
                if self
                    .streams
                    .get(&r.stream_id)
                    .is_some_and(|e| e.role == Role::Source)
                {
                    self.event(StreamEvent::ResyncRequested { id: r.stream_id });
                }
            }
            Body::StreamClose(c) => {
                if self.streams.remove(&c.stream_id).is_some() {
                    self.event(StreamEvent::Closed {
                        id: c.stream_id,
                        code: EndCode::try_from(c.code).unwrap_or(EndCode::Protocol),
                        reason: c.reason,
                    });
                }
            }
            other => return Some(other),
        }
        None
    }

    /// The connection ended: every stream is closed.
    pub fn handle_transport_closed(&mut self, why: &str) {
        self.closed = true;
        for (id, _) in std::mem::take(&mut self.streams) {
            self.event(StreamEvent::Closed {
                id,
                code: EndCode::SourceGone,
                reason: format!("connection closed: {why}"),
            });
        }
    }

    /// Nothing to do (no timers); present for the common contract.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// Always `None`: the endpoint has no timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// True when no action waits to be polled.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty()
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action<StreamEvent>> {
        self.out.pop_front()
    }

    fn on_open(&mut self, o: pb::StreamOpen) {
        let id = o.stream_id;
        let theirs = match self.side {
            Side::Client => id & 1 == 1,
            Side::Server => id & 1 == 0,
        };
        let refuse = |ep: &mut Self, code: EndCode, reason: String| {
            ep.send(Body::StreamReject(pb::StreamReject {
                request_id: o.request_id,
                stream_id: id,
                code: code as i32,
                reason,
            }));
        };
        if !theirs || id == 0 {
            return refuse(
                self,
                EndCode::Protocol,
                format!("stream id {id} is not the peer's to open"),
            );
        }
        if self.streams.contains_key(&id) {
            return refuse(self, EndCode::Protocol, format!("stream id {id} is in use"));
        }
        if self.streams.len() >= self.limits.max_per_conn {
            return refuse(
                self,
                EndCode::Limit,
                "too many streams on this connection".into(),
            );
        }
        if let Err(e) = validate_open(&o, &self.limits) {
            return refuse(self, EndCode::Invalid, e);
        }
        let class = Class::try_from(o.class).unwrap_or(Class::Lossless);
        let credit = match o.initial_credit {
            0 => u64::from(self.limits.default_window),
            n => u64::from(n),
        };
        self.streams.insert(
            id,
            Entry {
                role: Role::Source,
                class,
                state: State::Incoming,
                send_credit: credit,
                recv_credit: 0,
                consumed: 0,
                window: 0,
                next_seq: 1,
                need_key: false,
                blocked: false,
            },
        );
        self.event(StreamEvent::Incoming { id, open: o });
    }

    fn may_send(&self, e: &Entry) -> bool {
        e.role == Role::Source || e.class == Class::Lossless
    }

    fn window_of(&self, asked: u32) -> u64 {
        match asked {
            0 => u64::from(self.limits.default_window),
            n => u64::from(n).min(self.limits.max_window),
        }
    }

    fn entry(&mut self, id: u64) -> Result<&mut Entry, StreamError> {
        self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))
    }

    /// A stream-level protocol error: that stream closes, the connection stays.
    fn protocol_close(&mut self, id: u64, why: &str) -> Option<Body> {
        self.streams.remove(&id);
        self.send(Body::StreamClose(pb::StreamClose {
            stream_id: id,
            code: EndCode::Protocol as i32,
            reason: why.into(),
        }));
        self.event(StreamEvent::Closed {
            id,
            code: EndCode::Protocol,
            reason: format!("{}: {why}", end_text(EndCode::Protocol)),
        });
        None
    }

    fn fail(&mut self, why: String) {
        self.handle_transport_closed(&why);
        self.out
            .push_back(Action::Close(CloseReason::Protocol(why)));
    }

    fn send(&mut self, body: Body) {
        self.out
            .push_back(Action::Send(frame::encode(&msg::wrap(body))));
    }

    fn event(&mut self, e: StreamEvent) {
        self.out.push_back(Action::Event(e));
    }
}
