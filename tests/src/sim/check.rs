//! Checks the world makes on every hub action, as it performs them in order:
//!
//! - **Persist before acknowledge.** A message that acknowledges a durable change must leave
//!   only after that change is in the store: a RunCommandResponse or a Command after its
//!   `CommandCreated`, a CommandResult or CommandDone after its `CommandFinished`, a
//!   RegisterAgentResponse after the `AgentRegistered`, a RemoveAgentResponse after the
//!   `AgentRemoved`, a SetAgentDataResponse after the `AgentData` it answers. Since the world
//!   applies every `Persist` the moment it is polled, this checks that the hub emits the change
//!   before the acknowledgement (DESIGN.md §3).
//! - **Nothing after Close.** The hub writes or closes nothing on a connection it closed.
//!
//! It also labels the frames on the wire (for the trace) by decoding each direction of each
//! connection with its own frame decoder, as a tap on the wire would.

use std::collections::{BTreeMap, BTreeSet};

use switchboard_core::hub::{CommandStatus, ConnId};
use switchboard_core::link::{FrameDecoder, msg};
use switchboard_proto::message::Message as Body;

use super::net::Dir;
use super::store::MemStore;

/// The checker's state.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    taps: BTreeMap<(ConnId, Dir), Option<FrameDecoder>>,
    closed: BTreeSet<ConnId>,
    /// SetAgentDataRequests operators sent, by (connection, request id).
    data_requests: BTreeMap<(ConnId, u64), (String, String, String)>,
}

impl Checker {
    /// Decodes what passed on `conn` in `dir`: the message type names, or "?" once the stream
    /// stopped being frames.
    fn tap(&mut self, conn: ConnId, dir: Dir, bytes: &[u8]) -> (Vec<String>, Vec<Body>) {
        let slot = self
            .taps
            .entry((conn, dir))
            .or_insert_with(|| Some(FrameDecoder::new(1 << 24)));
        let Some(d) = slot else {
            return (vec!["?".into()], vec![]);
        };
        d.push(bytes);
        let (mut labels, mut bodies) = (vec![], vec![]);
        loop {
            match d.next_message().map(|m| m.map(msg::body)) {
                Ok(Some(Ok(b))) => {
                    labels.push(format!("{:?}", msg::type_of(&b)));
                    bodies.push(b);
                }
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    labels.push("?".into());
                    *slot = None;
                    break;
                }
            }
        }
        (labels, bodies)
    }

    /// A peer wrote `bytes` on `conn`: labels for the trace.
    pub(crate) fn peer_sent(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<String> {
        let (labels, bodies) = self.tap(conn, Dir::ToHub, bytes);
        for b in bodies {
            if let Body::SetAgentDataRequest(r) = b {
                self.data_requests
                    .insert((conn, r.request_id), (r.agent_id, r.name, r.value_json));
            }
        }
        labels
    }

    /// The hub writes `bytes` on `conn`: labels for the trace, or the violated rule.
    pub(crate) fn hub_sent(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        store: &MemStore,
    ) -> Result<Vec<String>, String> {
        if self.closed.contains(&conn) {
            return Err(format!(
                "the hub writes on {conn:?} after it closed or was told closed"
            ));
        }
        let (labels, bodies) = self.tap(conn, Dir::ToPeer, bytes);
        for b in &bodies {
            self.acknowledged(conn, b, store)?;
        }
        Ok(labels)
    }

    /// The hub was told that `conn` ended: it must forget it.
    pub(crate) fn hub_told_closed(&mut self, conn: ConnId) {
        self.closed.insert(conn);
    }

    /// The hub closes `conn`.
    pub(crate) fn hub_closed(&mut self, conn: ConnId) -> Result<(), String> {
        if !self.closed.insert(conn) {
            return Err(format!(
                "the hub closes {conn:?} after it closed or was told closed"
            ));
        }
        Ok(())
    }

    fn acknowledged(&self, conn: ConnId, b: &Body, store: &MemStore) -> Result<(), String> {
        let created = |id: i64| store.commands.contains_key(&id);
        let finished = |id: i64| {
            store
                .commands
                .get(&id)
                .is_some_and(|c| c.status != CommandStatus::Pending)
        };
        let ok = match b {
            Body::RunCommandResponse(r) => created(r.command_id),
            Body::Command(c) => created(c.command_id),
            Body::Result(r) => finished(r.command_id),
            Body::Done(d) => finished(d.command_id),
            Body::RegisterAgentResponse(r) => store.has_agent(&r.agent_id),
            Body::RemoveAgentResponse(r) => !store.has_agent(&r.agent_id),
            Body::SetAgentDataResponse(r) => match self.data_requests.get(&(conn, r.request_id)) {
                Some((agent, name, value)) => store.data(agent, name) == Some(value.as_str()),
                None => false,
            },
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "persist before acknowledge: {:?} left on {conn:?} before its change was stored: {b:?}",
                msg::type_of(b)
            ))
        }
    }
}
