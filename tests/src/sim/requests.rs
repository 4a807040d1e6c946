//! Operator requests: helpers that build the control messages, send them through an
//! operator's real `ClientSession`, and wait (on virtual time) for what answers them.

use std::time::Duration;

use switchboard_core::machine::ApiMisuse;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::node::Node;
use super::operator::Answer;
use super::world::{World, body_kind};
use super::{NodeId, cheap_hash};

impl World {
    /// Sends a request from an operator (it must have been welcomed).
    pub fn operator_send(&mut self, op: NodeId, body: Body) -> Result<(), ApiMisuse> {
        self.record(&format!("operator {op} sends {:?}", body_kind(&body)));
        let now = self.now();
        let Node::Operator(o) = &mut self.nodes[op] else {
            panic!("node {op} is not an operator");
        };
        o.send(body)?;
        let mut out = vec![];
        o.pump(now, &mut out);
        self.node_outs(op, out);
        Ok(())
    }

    fn rid(&mut self, op: NodeId) -> u64 {
        match &mut self.nodes[op] {
            Node::Operator(o) => o.request_id(),
            _ => panic!("node {op} is not an operator"),
        }
    }

    fn must_send(&mut self, op: NodeId, body: Body) {
        if let Err(e) = self.operator_send(op, body) {
            panic!("operator {op} cannot send: {e}");
        }
    }

    /// Sends a RunCommandRequest; returns its request id.
    pub fn run_command(
        &mut self,
        op: NodeId,
        agent: &str,
        operation: &str,
        data: serde_json::Value,
    ) -> u64 {
        let request_id = self.rid(op);
        let req = pb::RunCommandRequest {
            request_id,
            agent_id: agent.into(),
            operation: operation.into(),
            data: data.to_string(),
        };
        self.must_send(op, Body::RunCommandRequest(req));
        request_id
    }

    /// Runs a command and waits (at most 30 s) for its command id.
    pub fn start_command(
        &mut self,
        op: NodeId,
        agent: &str,
        operation: &str,
        data: serde_json::Value,
    ) -> i64 {
        let rid = self.run_command(op, agent, operation, data);
        self.wait_command_id(op, rid, Duration::from_secs(30))
    }

    /// Waits (at most `limit`) for the command id answering RunCommandRequest `rid`.
    pub fn wait_command_id(&mut self, op: NodeId, rid: u64, limit: Duration) -> i64 {
        self.run_until_cond(limit, |w| w.operator(op).response(rid).is_some());
        match self.operator(op).response(rid) {
            Some(Body::RunCommandResponse(r)) => r.command_id,
            other => panic!("RunCommandRequest {rid}: expected a command id, got {other:?}"),
        }
    }

    /// Waits (at most `limit`) for the final answer of command `id`.
    pub fn wait_answer(&mut self, op: NodeId, id: i64, limit: Duration) -> Answer {
        self.run_until_cond(limit, |w| w.operator(op).answer(id).is_some());
        self.operator(op)
            .answer(id)
            .unwrap_or_else(|| panic!("no answer for command {id} within {limit:?}"))
    }

    /// Sends a CommandCancel.
    pub fn cancel(&mut self, op: NodeId, command_id: i64) {
        self.must_send(op, Body::Cancel(pb::CommandCancel { command_id }));
    }

    /// Sends a SetAgentDataRequest; returns its request id.
    pub fn set_agent_data(&mut self, op: NodeId, agent: &str, name: &str, value_json: &str) -> u64 {
        let request_id = self.rid(op);
        let req = pb::SetAgentDataRequest {
            request_id,
            agent_id: agent.into(),
            name: name.into(),
            value_json: value_json.into(),
        };
        self.must_send(op, Body::SetAgentDataRequest(req));
        request_id
    }

    /// Sends a RegisterAgentRequest with a cheap argon2id hash of `secret`; returns its request id.
    pub fn register_agent_request(
        &mut self,
        op: NodeId,
        agent: &str,
        secret: &str,
        allowed: &[&str],
    ) -> u64 {
        let request_id = self.rid(op);
        let req = pb::RegisterAgentRequest {
            request_id,
            agent_id: agent.into(),
            secret_hash: cheap_hash(secret),
            allowed_networks: allowed.iter().map(|s| s.to_string()).collect(),
        };
        self.must_send(op, Body::RegisterAgentRequest(req));
        request_id
    }

    /// Sends a RemoveAgentRequest; returns its request id.
    pub fn remove_agent_request(&mut self, op: NodeId, agent: &str) -> u64 {
        let request_id = self.rid(op);
        let req = pb::RemoveAgentRequest {
            request_id,
            agent_id: agent.into(),
        };
        self.must_send(op, Body::RemoveAgentRequest(req));
        request_id
    }

    /// Sends a RevokeCertificateRequest (by name, or by serial when not empty) and waits (at
    /// most 30 s) for its answer.
    pub fn revoke_certificate(&mut self, op: NodeId, name: &str, serial: &str) -> Body {
        let request_id = self.rid(op);
        let req = pb::RevokeCertificateRequest {
            request_id,
            name: name.into(),
            serial: serial.into(),
        };
        self.must_send(op, Body::RevokeCertificateRequest(req));
        self.wait_response(op, request_id)
    }

    /// Sends a ListCertificatesRequest for `name` (all when empty) and waits for the first page.
    pub fn list_certificates(&mut self, op: NodeId, name: &str) -> Body {
        let request_id = self.rid(op);
        let req = pb::ListCertificatesRequest {
            request_id,
            name: name.into(),
            ..Default::default()
        };
        self.must_send(op, Body::ListCertificatesRequest(req));
        self.wait_response(op, request_id)
    }

    /// Sends a SubscribeEventsRequest (events after `from_order`) and waits for its answer.
    pub fn subscribe_events(&mut self, op: NodeId, from_order: u64) -> Body {
        let request_id = self.rid(op);
        let req = pb::SubscribeEventsRequest {
            request_id,
            from_order,
        };
        self.must_send(op, Body::SubscribeEventsRequest(req));
        self.wait_response(op, request_id)
    }

    /// Waits (at most 30 s) for the response to request `rid`.
    pub fn wait_response(&mut self, op: NodeId, rid: u64) -> Body {
        let got = self.run_until_cond(Duration::from_secs(30), |w| {
            w.operator(op).response(rid).is_some()
        });
        assert!(got, "no answer to request {rid} within 30 s");
        self.operator(op)
            .response(rid)
            .cloned()
            .expect("answer present")
    }
}
