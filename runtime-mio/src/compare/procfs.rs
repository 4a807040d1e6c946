//! Readers of `/proc`: thread and process CPU time, the kernel's UDP drop counter.

use std::fs;

use crate::sys;

/// CPU time of one of our threads, in ns.
pub(super) fn thread_cpu_ns(tid: i32) -> u64 {
    cpu_ns(&format!("/proc/self/task/{tid}"))
}

/// CPU time of a process (ksoftirqd), in ns.
pub(super) fn process_cpu_ns(pid: u32) -> u64 {
    cpu_ns(&format!("/proc/{pid}"))
}

/// `schedstat`'s run time, or `stat`'s utime + stime (fields 14 and 15) in ns.
pub(super) fn cpu_ns(dir: &str) -> u64 {
    if let Ok(text) = fs::read_to_string(format!("{dir}/schedstat"))
        && let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse().ok())
    {
        return ns;
    }
    let Ok(stat) = fs::read_to_string(format!("{dir}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 1_000_000_000 / sys::clock_ticks_per_second()
}

/// The pid of `ksoftirqd/<cpu>`.
pub(super) fn ksoftirqd_pid(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// The kernel's UDP `RcvbufErrors` counter (`/proc/net/snmp`).
pub(super) fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
