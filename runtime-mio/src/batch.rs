//! Batched sends pointing at the receive buffers (no copy): UDP GSO for the packets of a batch
//! that go to the same destination, `sendmmsg` for the rest, one `sendmsg` per packet when the
//! kernel has neither.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sys::{self, CmsgBuf};

/// Bytes per receive slot: more than 512, so that an oversized datagram reads as a wrong size.
pub(crate) const SLOT_LEN: usize = 576;
/// Receive slots per batch (datagrams received before a flush).
pub(crate) const SLOTS: usize = 64;
/// Most segments merged into one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
const MAX_SEGMENTS: usize = 64;

/// The kernel facilities a send uses (see [`crate::SendPath`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendMode {
    pub(crate) gso: bool,
    pub(crate) sendmmsg: bool,
}

/// Counters of the send side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendCounters {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Send system calls.
    pub syscalls: u64,
    /// GSO messages (several datagrams in one message).
    pub gso_messages: u64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub would_block: u64,
    /// Datagrams the kernel refused.
    pub errors: u64,
}

#[derive(Clone, Copy)]
struct Outgoing {
    dest: SocketAddr,
    slot: u16,
    len: u16,
}

#[derive(Clone, Copy)]
struct Group {
    dest: SocketAddr,
    first: u32,
    last: u32,
}

#[derive(Clone, Copy)]
struct MessageDesc {
    iov_start: usize,
    iov_count: usize,
    cmsg_len: usize,
    segments: u64,
}

const NONE: u32 = u32::MAX;

/// Receive slots plus the datagrams queued to send from them. Holds raw pointers while
/// flushing, so it lives on the relay thread's stack (not `Send`).
pub(crate) struct SendBatch {
    slots: Box<[u8]>,
    used_slots: usize,
    out: Vec<Outgoing>,
    table: Vec<u32>,
    next: Vec<u32>,
    groups: Vec<Group>,
    names: Vec<libc::sockaddr_storage>,
    namelens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    cmsgs: Vec<CmsgBuf>,
    descs: Vec<MessageDesc>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub(crate) fn new() -> SendBatch {
        SendBatch {
            slots: vec![0u8; SLOTS * SLOT_LEN].into_boxed_slice(),
            used_slots: 0,
            out: Vec::with_capacity(SLOTS * 16),
            table: Vec::new(),
            next: Vec::new(),
            groups: Vec::new(),
            names: Vec::new(),
            namelens: Vec::new(),
            iovs: Vec::new(),
            cmsgs: Vec::new(),
            descs: Vec::new(),
            msgs: Vec::new(),
        }
    }

    /// Whether every receive slot holds a datagram waiting to be sent.
    pub(crate) fn is_full(&self) -> bool {
        self.used_slots == SLOTS
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The next free receive slot.
    pub(crate) fn free_slot(&mut self) -> &mut [u8] {
        let at = self.used_slots * SLOT_LEN;
        &mut self.slots[at..at + SLOT_LEN]
    }

    /// Keeps the free slot (it holds a datagram to send) and queues it to each of `dests`.
    pub(crate) fn commit_slot<'a>(
        &mut self,
        len: usize,
        dests: impl IntoIterator<Item = &'a SocketAddr>,
    ) {
        let slot = self.used_slots as u16;
        let before = self.out.len();
        self.out.extend(dests.into_iter().map(|&dest| Outgoing {
            dest,
            slot,
            len: len as u16,
        }));
        if self.out.len() > before {
            self.used_slots += 1;
        }
    }

    /// Sends everything queued on `fd` and frees the slots.
    pub(crate) fn flush(&mut self, fd: RawFd, mode: &mut SendMode, counters: &mut SendCounters) {
        if self.out.is_empty() {
            self.used_slots = 0;
            return;
        }
        self.describe(mode.gso);
        self.build_messages();
        self.send(fd, mode, counters);
        self.out.clear();
        self.used_slots = 0;
    }

    /// Fills names, iovecs, control buffers and message descriptions (no pointers kept yet
    /// except into `slots`, which never moves).
    fn describe(&mut self, gso: bool) {
        self.names.clear();
        self.namelens.clear();
        self.iovs.clear();
        self.cmsgs.clear();
        self.descs.clear();
        if !gso {
            for i in 0..self.out.len() {
                let o = self.out[i];
                self.push_message(o.dest, &[i as u32]);
            }
            return;
        }
        self.group_by_destination();
        let mut chunk: [u32; MAX_SEGMENTS] = [0; MAX_SEGMENTS];
        for g in 0..self.groups.len() {
            let group = self.groups[g];
            let mut n = 0;
            let mut entry = group.first;
            while entry != NONE {
                let same_len =
                    n == 0 || self.out[entry as usize].len == self.out[chunk[0] as usize].len;
                if n == MAX_SEGMENTS || !same_len {
                    self.push_message(group.dest, &chunk[..n]);
                    n = 0;
                }
                chunk[n] = entry;
                n += 1;
                entry = self.next[entry as usize];
            }
            if n > 0 {
                self.push_message(group.dest, &chunk[..n]);
            }
        }
    }

    /// Groups queued datagrams by destination, keeping each destination's order, with a small
    /// open-addressing table (cleared per batch, never shrunk).
    fn group_by_destination(&mut self) {
        let n = self.out.len();
        let size = (2 * n).next_power_of_two().max(16);
        if self.table.len() < size {
            self.table.resize(size, NONE);
        }
        let table = &mut self.table[..size];
        table.fill(NONE);
        let mask = size - 1;
        self.groups.clear();
        self.next.clear();
        self.next.resize(n, NONE);
        for (i, o) in self.out.iter().enumerate() {
            let mut at = (hash_addr(&o.dest) as usize) & mask;
            loop {
                let g = table[at];
                if g == NONE {
                    table[at] = self.groups.len() as u32;
                    self.groups.push(Group {
                        dest: o.dest,
                        first: i as u32,
                        last: i as u32,
                    });
                    break;
                }
                let group = &mut self.groups[g as usize];
                if group.dest == o.dest {
                    self.next[group.last as usize] = i as u32;
                    group.last = i as u32;
                    break;
                }
                at = (at + 1) & mask;
            }
        }
    }

    fn push_message(&mut self, dest: SocketAddr, entries: &[u32]) {
        let mut name = sys::empty_sockaddr();
        let namelen = sys::write_sockaddr(&dest, &mut name);
        self.names.push(name);
        self.namelens.push(namelen);
        let iov_start = self.iovs.len();
        for &e in entries {
            let o = self.out[e as usize];
            let at = o.slot as usize * SLOT_LEN;
            self.iovs.push(libc::iovec {
                iov_base: self.slots[at..].as_ptr() as *mut libc::c_void,
                iov_len: o.len as usize,
            });
        }
        let mut cmsg = CmsgBuf::ZERO;
        let cmsg_len = if entries.len() > 1 {
            let segment = self.out[entries[0] as usize].len;
            sys::write_segment_cmsg(&mut cmsg, segment)
        } else {
            0
        };
        self.cmsgs.push(cmsg);
        self.descs.push(MessageDesc {
            iov_start,
            iov_count: entries.len(),
            cmsg_len,
            segments: entries.len() as u64,
        });
    }

    /// Builds the `mmsghdr`s once names, iovecs and control buffers no longer move.
    fn build_messages(&mut self) {
        self.msgs.clear();
        for (i, d) in self.descs.iter().enumerate() {
            let control = (d.cmsg_len > 0).then(|| (&self.cmsgs[i] as *const CmsgBuf, d.cmsg_len));
            let msg_hdr = sys::msghdr(
                &self.names[i],
                self.namelens[i],
                self.iovs[d.iov_start..].as_ptr(),
                d.iov_count,
                control,
            );
            self.msgs.push(libc::mmsghdr {
                msg_hdr,
                msg_len: 0,
            });
        }
    }

    fn send(&mut self, fd: RawFd, mode: &mut SendMode, counters: &mut SendCounters) {
        let mut i = 0;
        while i < self.msgs.len() {
            let result = if mode.sendmmsg {
                // SAFETY: the messages point into `names`, `iovs`, `cmsgs` and `slots`, none
                // of which is touched until the sends are over.
                unsafe { sys::sendmmsg(fd, &mut self.msgs[i..]) }
            } else {
                // SAFETY: as above, for one message.
                unsafe { sys::sendmsg(fd, &self.msgs[i].msg_hdr) }.map(|_| 1)
            };
            counters.syscalls += 1;
            match result {
                Ok(0) => {
                    counters.would_block += self.remaining_segments(i);
                    break;
                }
                Ok(n) => {
                    for d in &self.descs[i..i + n] {
                        counters.sent += d.segments;
                        counters.gso_messages += u64::from(d.segments > 1);
                    }
                    i += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    counters.would_block += self.remaining_segments(i);
                    break;
                }
                Err(e) => {
                    let d = self.descs[i];
                    let gso_refused = d.segments > 1
                        && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL));
                    if gso_refused && mode.gso {
                        mode.gso = false;
                        tracing::warn!("UDP GSO send failed ({e}): falling back to sendmmsg");
                    } else {
                        tracing::debug!("relay send failed: {e}");
                    }
                    counters.errors += d.segments;
                    i += 1;
                }
            }
        }
    }

    fn remaining_segments(&self, from: usize) -> u64 {
        self.descs[from..].iter().map(|d| d.segments).sum()
    }
}

fn hash_addr(addr: &SocketAddr) -> u64 {
    let key = match addr {
        SocketAddr::V4(a) => (u32::from(*a.ip()) as u64) << 16 | a.port() as u64,
        SocketAddr::V6(a) => {
            let ip = u128::from(*a.ip());
            (ip as u64) ^ ((ip >> 64) as u64).rotate_left(17) ^ a.port() as u64
        }
    };
    let full = (key as u128) * 0x9E37_79B9_7F4A_7C15u128;
    (full as u64) ^ ((full >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        socket
    }

    /// Queues 20 datagrams (tagged 0..20) for `a`, and every other one for `b` too.
    fn fill(batch: &mut SendBatch, a: SocketAddr, b: SocketAddr) -> u64 {
        let mut queued = 0;
        for i in 0..20u8 {
            let slot = batch.free_slot();
            slot[..512].fill(i);
            let dests = if i % 2 == 0 { vec![a, b] } else { vec![a] };
            queued += dests.len() as u64;
            batch.commit_slot(512, dests.iter());
        }
        queued
    }

    fn expect_in_order(socket: &UdpSocket, tags: impl Iterator<Item = u8>) {
        let mut buf = [0u8; 2048];
        for tag in tags {
            let len = socket.recv(&mut buf).expect("datagram");
            assert_eq!(len, 512);
            assert!(buf[..512].iter().all(|&x| x == tag), "expected tag {tag}");
        }
    }

    #[test]
    fn every_send_mode_delivers_each_datagram_in_order() {
        let modes = [
            SendMode {
                gso: true,
                sendmmsg: true,
            },
            SendMode {
                gso: false,
                sendmmsg: true,
            },
            SendMode {
                gso: false,
                sendmmsg: false,
            },
        ];
        let gso_works = sys::probe_gso();
        for mode in modes {
            if mode.gso && !gso_works {
                eprintln!("UDP GSO unavailable on this kernel: GSO mode not exercised");
                continue;
            }
            let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let (a, b) = (receiver(), receiver());
            let mut batch = SendBatch::new();
            let queued = fill(
                &mut batch,
                a.local_addr().expect("addr"),
                b.local_addr().expect("addr"),
            );
            let mut mode_now = mode;
            let mut counters = SendCounters::default();
            batch.flush(sender.as_raw_fd(), &mut mode_now, &mut counters);
            assert_eq!(mode_now, mode, "no fallback needed on loopback");
            assert_eq!(counters.sent, queued);
            assert_eq!(counters.errors + counters.would_block, 0);
            if mode.gso {
                assert_eq!(counters.gso_messages, 2, "one GSO message per destination");
                assert_eq!(counters.syscalls, 1);
            } else if mode.sendmmsg {
                assert_eq!(counters.syscalls, 1);
            } else {
                assert_eq!(counters.syscalls, queued);
            }
            expect_in_order(&a, 0..20);
            expect_in_order(&b, (0..20).step_by(2));
            assert!(batch.is_empty());
        }
    }

    #[test]
    fn gso_messages_hold_at_most_max_segments() {
        if !sys::probe_gso() {
            return;
        }
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let a = receiver();
        let dest = a.local_addr().expect("addr");
        let mut batch = SendBatch::new();
        let mut mode = SendMode {
            gso: true,
            sendmmsg: true,
        };
        let mut counters = SendCounters::default();
        // One slot sent 100 times to one destination: 64 + 36 segments.
        batch.free_slot()[..512].fill(9);
        batch.commit_slot(512, std::iter::repeat_n(&dest, 100));
        batch.flush(sender.as_raw_fd(), &mut mode, &mut counters);
        assert_eq!((counters.sent, counters.gso_messages), (100, 2));
        expect_in_order(&a, std::iter::repeat_n(9, 100));
    }
}
