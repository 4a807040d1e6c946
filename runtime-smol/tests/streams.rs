//! Streams over real sockets: a real Switchboard agent's `metrics`, `tail` and `shell` through
//! the hub over TLS, two viewers sharing one source.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Rig, connected};
use switchboard_core::machine::Action;
use switchboard_core::stream::{
    Class, EndCode, OpenRequest, Side, StreamEndpoint, StreamEvent, StreamLimits,
};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::client::{AdminClient, with_timeout};

/// An operator session with a stream endpoint beside it.
struct Viewer {
    client: AdminClient,
    ep: StreamEndpoint,
}

impl Viewer {
    async fn new(rig: &Rig) -> Viewer {
        Viewer {
            client: rig.admin().await,
            ep: StreamEndpoint::new(Side::Client, StreamLimits::default()),
        }
    }

    async fn flush(&mut self) -> Vec<StreamEvent> {
        let mut evs = vec![];
        while let Some(a) = self.ep.poll_action() {
            match a {
                Action::Send(f) => self.client.send_frame(f).await.expect("send"),
                Action::Event(StreamEvent::Data {
                    id,
                    payload,
                    sequence,
                    key_frame,
                    channel,
                }) => {
                    self.ep.consume(id, payload.len()).expect("consume");
                    evs.push(StreamEvent::Data {
                        id,
                        payload,
                        sequence,
                        key_frame,
                        channel,
                    });
                }
                Action::Event(e) => evs.push(e),
                _ => {}
            }
        }
        evs
    }

    async fn open(&mut self, req: OpenRequest) -> u64 {
        let id = self.ep.open(req).expect("open");
        self.flush().await;
        id
    }

    /// Events until `done` says so (within 20 s).
    async fn until(&mut self, mut done: impl FnMut(&[StreamEvent]) -> bool) -> Vec<StreamEvent> {
        let mut all = self.flush().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&all) {
            assert!(Instant::now() < deadline, "timed out; saw {all:?}");
            let m = with_timeout(
                Duration::from_secs(20),
                "stream",
                self.client.next_message(),
            )
            .await
            .expect("message");
            self.ep.handle_message(Instant::now(), m);
            all.extend(self.flush().await);
        }
        all
    }
}

fn text(evs: &[StreamEvent]) -> String {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Data { payload, .. } => Some(String::from_utf8_lossy(payload).to_string()),
            _ => None,
        })
        .collect()
}

fn data_count(evs: &[StreamEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e, StreamEvent::Data { .. }))
        .count()
}

/// The hub's streams, as `stream list` sees them.
async fn list_streams(admin: &mut AdminClient) -> pb::ListStreamsResponse {
    let rid = admin.request_id();
    let body = Body::ListStreamsRequest(pb::ListStreamsRequest { request_id: rid });
    match admin
        .call(rid, body, Duration::from_secs(10))
        .await
        .expect("list")
    {
        Body::ListStreamsResponse(l) => l,
        other => panic!("{other:?}"),
    }
}

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn metrics_tail_and_shell_of_a_real_agent_through_the_hub() {
    smol::block_on(async {
        let rig = Rig::start().await;
        let mut admin = rig.admin().await;
        let (cert, secret) = rig.register(&mut admin, "s1").await;
        let (_stop, status) = rig.spawn_agent("s1", &cert, &secret);
        connected(&status).await;

        // metrics: two viewers, one source.
        let metrics = || OpenRequest {
            kind: "metrics".into(),
            agent_id: "s1".into(),
            class: Class::Latest,
            params: params(&[("interval_ms", "200")]),
            ..Default::default()
        };
        let mut a = Viewer::new(&rig).await;
        let mut b = Viewer::new(&rig).await;
        a.open(metrics()).await;
        let ea = a.until(|e| data_count(e) >= 2).await;
        let first = ea.iter().find_map(|e| match e {
            StreamEvent::Data { payload, .. } => Some(payload.clone()),
            _ => None,
        });
        let v: serde_json::Value = serde_json::from_slice(&first.expect("data")).expect("json");
        assert!(v["memory"]["total_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
        b.open(metrics()).await;
        let eb = b.until(|e| data_count(e) >= 2).await;
        assert!(eb.iter().any(|e| matches!(
            e,
            StreamEvent::Accepted {
                multicast: true,
                ..
            }
        )));
        let list = list_streams(&mut admin).await;
        assert_eq!(list.groups.len(), 1, "one source for two viewers: {list:?}");
        assert_eq!(list.groups[0].sinks.len(), 2);

        // tail: lines in order, from the start.
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("dir");
        let log = dir.path().join("app.log");
        std::fs::write(&log, "first\n").expect("write");
        let tail = a
            .open(OpenRequest {
                kind: "tail".into(),
                agent_id: "s1".into(),
                class: Class::Lossless,
                params: params(&[("path", log.to_str().expect("utf8")), ("offset", "0")]),
                ..Default::default()
            })
            .await;
        let got = a
            .until(|e| {
                text(
                    &e.iter()
                        .filter(|x| matches!(x, StreamEvent::Data { id, .. } if *id == tail))
                        .cloned()
                        .collect::<Vec<_>>(),
                )
                .contains("first\n")
            })
            .await;
        assert!(
            got.iter()
                .any(|e| matches!(e, StreamEvent::Accepted { id, .. } if *id == tail))
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        for i in 0..200 {
            std::io::Write::write_all(&mut f, format!("line {i}\n").as_bytes()).expect("append");
        }
        let mut seen = String::new();
        let _ = a
            .until(|e| {
                seen = text(
                    &e.iter()
                        .filter(|x| matches!(x, StreamEvent::Data { id, .. } if *id == tail))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                seen.contains("line 199\n")
            })
            .await;
        let want: String = (0..200).map(|i| format!("line {i}\n")).collect();
        assert!(seen.ends_with(&want), "lines lost or reordered: {seen:?}");
        // A path outside the agent's directories is refused.
        a.open(OpenRequest {
            kind: "tail".into(),
            agent_id: "s1".into(),
            class: Class::Lossless,
            params: params(&[("path", "/etc/hostname")]),
            ..Default::default()
        })
        .await;
        a.until(|e| {
            e.iter().any(|x| {
                matches!(
                    x,
                    StreamEvent::Rejected {
                        code: EndCode::Unauthorised,
                        ..
                    }
                )
            })
        })
        .await;

        // shell: keystrokes in, output out, the process gone when the stream closes.
        let sh = a
            .open(OpenRequest {
                kind: "shell".into(),
                agent_id: "s1".into(),
                class: Class::Lossless,
                params: params(&[("command", "echo ready; exec cat")]),
                ..Default::default()
            })
            .await;
        let shell_text = |e: &[StreamEvent]| {
            text(
                &e.iter()
                    .filter(|x| matches!(x, StreamEvent::Data { id, .. } if *id == sh))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        };
        let mut out = String::new();
        a.until(|e| {
            out += &shell_text(e);
            out.contains("ready")
        })
        .await;
        a.ep.send_data(sh, 0, false, Bytes::from_static(b"hello from the sink\n"))
            .expect("keys");
        a.ep.send_data(
            sh,
            1,
            false,
            Bytes::from_static(b"{\"cols\":100,\"rows\":30}"),
        )
        .expect("resize");
        let mut out = String::new();
        a.until(|e| {
            out += &shell_text(e);
            out.contains("hello from the sink")
        })
        .await;
        a.ep.close(sh, EndCode::Normal, "done").expect("close");
        a.flush().await;
        drop(b);
        // Nothing of the shell is left: only the metrics and tail groups remain (the closed
        // viewer's sink went with its connection).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = list_streams(&mut admin).await;
            let kinds: Vec<&str> = list.groups.iter().map(|g| g.kind.as_str()).collect();
            if !kinds.contains(&"shell") {
                break;
            }
            assert!(Instant::now() < deadline, "{kinds:?}");
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        rig.stop().await;
    });
}
