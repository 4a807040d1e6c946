//! `metrics`: CPU (total and per core), memory, load average, network and disk counters read
//! from /proc at the requested interval. Every sample is a JSON key frame.

use std::collections::BTreeMap;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures_lite::FutureExt;
use serde_json::{Value, json};
use switchboard_core::stream::EndCode;
use switchboard_proto as pb;

use super::{SourceCtl, SourceMsg};

/// The sampling interval an open asks for.
pub(super) fn interval(open: &pb::StreamOpen) -> Result<Duration, String> {
    switchboard_core::stream::interval_param(open)
}

pub(super) async fn run(
    id: u64,
    interval: Duration,
    out: Sender<SourceMsg>,
    ctl: Receiver<SourceCtl>,
) {
    let mut prev: Option<Vec<CpuTimes>> = None;
    loop {
        let sample = match smol::unblock(read_all).await {
            Ok(s) => s,
            Err(e) => {
                let _ = out
                    .send(SourceMsg::End {
                        id,
                        code: EndCode::SourceGone,
                        reason: format!("cannot read /proc: {e}"),
                    })
                    .await;
                return;
            }
        };
        let frame = sample.to_json(prev.as_deref());
        prev = Some(sample.cpu);
        let msg = SourceMsg::Data {
            id,
            channel: 0,
            key_frame: true,
            payload: Bytes::from(frame.to_string()),
            ready: None,
        };
        if out.send(msg).await.is_err() {
            return;
        }
        // Next sample at the interval, or at once on a resync.
        let tick = async {
            async_io::Timer::after(interval).await;
            true
        };
        let resync = async {
            loop {
                match ctl.recv().await {
                    Ok(SourceCtl::Resync) => return true,
                    Ok(SourceCtl::Input { .. }) => {}
                    Err(_) => return false,
                }
            }
        };
        if !tick.or(resync).await {
            return;
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

struct Sample {
    cpu: Vec<CpuTimes>,
    mem: BTreeMap<String, u64>,
    load: Vec<f64>,
    net: BTreeMap<String, (u64, u64)>,
    disk: BTreeMap<String, (u64, u64)>,
    unix_ms: i64,
}

fn read_all() -> std::io::Result<Sample> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let loadavg = std::fs::read_to_string("/proc/loadavg")?;
    let netdev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let diskstats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    Ok(Sample {
        cpu: parse_stat(&stat),
        mem: parse_meminfo(&meminfo),
        load: loadavg
            .split_whitespace()
            .take(3)
            .filter_map(|v| v.parse().ok())
            .collect(),
        net: parse_netdev(&netdev),
        disk: parse_diskstats(&diskstats),
        unix_ms: crate::server::unix_ms_now(),
    })
}

/// `cpu` then `cpuN` lines: busy and total jiffies of each.
fn parse_stat(s: &str) -> Vec<CpuTimes> {
    s.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            CpuTimes {
                busy: total.saturating_sub(idle),
                total,
            }
        })
        .collect()
}

fn parse_meminfo(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), kb * 1024))
        })
        .collect()
}

fn parse_netdev(s: &str) -> BTreeMap<String, (u64, u64)> {
    s.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Some((name.trim().to_string(), (*v.first()?, *v.get(8)?)))
        })
        .collect()
}

/// Read and written bytes per whole disk (sectors of 512 bytes; partitions and loop devices
/// left out).
fn parse_diskstats(s: &str) -> BTreeMap<String, (u64, u64)> {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.get(2)?;
            if name.starts_with("loop") || name.starts_with("ram") {
                return None;
            }
            let read: u64 = f.get(5)?.parse().ok()?;
            let written: u64 = f.get(9)?.parse().ok()?;
            Some((name.to_string(), (read * 512, written * 512)))
        })
        .collect()
}

impl Sample {
    fn to_json(&self, prev: Option<&[CpuTimes]>) -> Value {
        let pct = |i: usize, now: &CpuTimes| -> f64 {
            let (b0, t0) = prev
                .and_then(|p| p.get(i))
                .map_or((0, 0), |p| (p.busy, p.total));
            let dt = now.total.saturating_sub(t0);
            if dt == 0 {
                return 0.0;
            }
            let v = now.busy.saturating_sub(b0) as f64 * 100.0 / dt as f64;
            (v * 10.0).round() / 10.0
        };
        let total = self.cpu.first().map_or(0.0, |c| pct(0, c));
        let cores: Vec<f64> = self
            .cpu
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, c)| pct(i, c))
            .collect();
        let mem = |k: &str| self.mem.get(k).copied().unwrap_or(0);
        json!({
            "unix_ms": self.unix_ms,
            "cpu": { "total_percent": total, "cores_percent": cores },
            "memory": {
                "total_bytes": mem("MemTotal"),
                "available_bytes": mem("MemAvailable"),
                "used_bytes": mem("MemTotal").saturating_sub(mem("MemAvailable")),
                "swap_used_bytes": mem("SwapTotal").saturating_sub(mem("SwapFree")),
            },
            "load": self.load,
            "net": self.net.iter().map(|(k, (rx, tx))| (k.clone(), json!({"rx_bytes": rx, "tx_bytes": tx}))).collect::<serde_json::Map<_, _>>(),
            "disk": self.disk.iter().map(|(k, (r, w))| (k.clone(), json!({"read_bytes": r, "written_bytes": w}))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_into_a_sample() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1\n";
        let cpu = parse_stat(stat);
        assert_eq!(cpu.len(), 3);
        assert_eq!((cpu[0].busy, cpu[0].total), (200, 1000));
        let later = parse_stat(
            "cpu  200 0 200 1400 200 0 0 0 0 0\ncpu0 100 0 100 700 100 0 0 0 0 0\ncpu1 100 0 100 700 100 0 0 0 0 0\n",
        );
        let s = Sample {
            cpu: later,
            mem: parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 250 kB\n"),
            load: vec![0.5, 0.25, 0.1],
            net: parse_netdev("h1\nh2\n  lo: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n"),
            disk: parse_diskstats(
                "   8       0 sda 1 0 4 0 2 0 8 0 0 0 0\n   7 0 loop0 1 0 1 0 1 0 1 0 0 0 0\n",
            ),
            unix_ms: 5,
        };
        let v = s.to_json(Some(&cpu));
        assert_eq!(v["cpu"]["total_percent"], 20.0);
        assert_eq!(v["cpu"]["cores_percent"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["memory"]["used_bytes"], 750 * 1024);
        assert_eq!(v["net"]["lo"]["tx_bytes"], 20);
        assert_eq!(v["disk"]["sda"]["written_bytes"], 8 * 512);
        assert!(v["disk"].get("loop0").is_none());
    }

    #[test]
    fn this_machine_has_the_files() {
        let s = read_all().expect("/proc");
        let v = s.to_json(None);
        assert!(v["memory"]["total_bytes"].as_u64().unwrap_or(0) > 0);
        assert!(
            !v["cpu"]["cores_percent"]
                .as_array()
                .expect("cores")
                .is_empty()
        );
    }
}
