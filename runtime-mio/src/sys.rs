//! The few Linux calls std and mio do not offer: `sendmmsg`, UDP GSO (`UDP_SEGMENT`), CPU
//! affinity and thread ids. Every `unsafe` block is here or in `batch` (which sends the messages
//! it builds), each with its safety argument.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::Duration;

/// Space for one `UDP_SEGMENT` control message (a `u16`), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf([u8; 32]);

impl CmsgBuf {
    pub(crate) const ZERO: CmsgBuf = CmsgBuf([0; 32]);
}

/// An all-zero `sockaddr_storage`.
pub(crate) fn empty_sockaddr() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes are valid.
    unsafe { mem::zeroed() }
}

/// Writes `addr` as a C socket address; returns its length.
pub(crate) fn write_sockaddr(
    addr: &SocketAddr,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Writes a `UDP_SEGMENT` control message for `segment`-byte segments into `buf`; returns the
/// control length to put in `msg_controllen`.
pub(crate) fn write_segment_cmsg(buf: &mut CmsgBuf, segment: u16) -> usize {
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize,
            libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize,
        )
    };
    debug_assert!(space <= buf.0.len());
    buf.0 = [0; 32];
    let header = libc::cmsghdr {
        cmsg_len: len as _,
        cmsg_level: libc::SOL_UDP,
        cmsg_type: libc::UDP_SEGMENT,
    };
    // SAFETY: the buffer is 8-byte aligned and holds CMSG_SPACE(2) <= 32 bytes: the header
    // fits at its start and the u16 payload at CMSG_DATA (header size, already aligned).
    unsafe {
        let base = buf.0.as_mut_ptr();
        ptr::write(base.cast::<libc::cmsghdr>(), header);
        let data = base.add(mem::size_of::<libc::cmsghdr>());
        ptr::write_unaligned(data.cast::<u16>(), segment);
    }
    space
}

/// `sendmmsg(2)` on `fd`; returns how many messages were sent.
///
/// # Safety
///
/// Every pointer in `msgs` (names, iovecs and what they point to, control buffers) must be
/// valid for reads for the duration of the call.
pub(crate) unsafe fn sendmmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let vlen = msgs.len().min(1024) as libc::c_uint;
    // SAFETY: the caller guarantees the messages' pointers; `msgs` is valid for `vlen` entries.
    let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), vlen, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `sendmsg(2)` on `fd`; returns the bytes sent.
///
/// # Safety
///
/// As for [`sendmmsg`], for the one message.
pub(crate) unsafe fn sendmsg(fd: RawFd, msg: &libc::msghdr) -> io::Result<usize> {
    // SAFETY: the caller guarantees the message's pointers.
    let n = unsafe { libc::sendmsg(fd, msg, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A `msghdr` over one name, a run of iovecs and an optional control buffer.
pub(crate) fn msghdr(
    name: *const libc::sockaddr_storage,
    namelen: libc::socklen_t,
    iov: *const libc::iovec,
    iovlen: usize,
    control: Option<(*const CmsgBuf, usize)>,
) -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct; all-zero is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = name as *mut libc::c_void;
    msg.msg_namelen = namelen;
    msg.msg_iov = iov as *mut libc::iovec;
    msg.msg_iovlen = iovlen as _;
    if let Some((buf, len)) = control {
        msg.msg_control = buf as *mut libc::c_void;
        msg.msg_controllen = len as _;
    }
    msg
}

/// Whether `sendmmsg` exists on the running kernel (a zero-length call succeeds).
pub(crate) fn probe_sendmmsg() -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    // SAFETY: zero messages: no pointer is read.
    unsafe { sendmmsg(socket.as_raw_fd(), &mut []) }.is_ok()
}

/// Whether UDP GSO works on loopback: two 512-byte segments sent in one `sendmsg` arrive as two
/// datagrams.
pub(crate) fn probe_gso() -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let Ok(me) = socket.local_addr() else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return false;
    }
    let payload = [0x42u8; 1024];
    let iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut name = empty_sockaddr();
    let namelen = write_sockaddr(&me, &mut name);
    let mut cmsg = CmsgBuf::ZERO;
    let controllen = write_segment_cmsg(&mut cmsg, 512);
    let msg = msghdr(&name, namelen, &iov, 1, Some((&cmsg, controllen)));
    // SAFETY: name, iov (and the payload it points to) and cmsg live until the call returns.
    match unsafe { sendmsg(socket.as_raw_fd(), &msg) } {
        Ok(1024) => {}
        _ => return false,
    }
    let mut buf = [0u8; 2048];
    (0..2).all(|_| matches!(socket.recv(&mut buf), Ok(512)))
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit set; zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    if cpu >= 8 * mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu index too large",
        ));
    }
    // SAFETY: `cpu` is within the set (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the given size.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the calling thread run on every CPU again.
pub fn allow_all_cpus() -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit set; zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for cpu in 0..cpus.min(8 * mem::size_of::<libc::cpu_set_t>()) {
        // SAFETY: `cpu` is within the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the given size.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's kernel thread id (for `/proc/self/task/<tid>/stat`).
pub fn current_thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Clock ticks per second (`_SC_CLK_TCK`), for `/proc/*/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Raises the soft open-file limit to the hard one (the benchmark opens many sockets).
pub fn raise_open_file_limit() -> io::Result<u64> {
    // SAFETY: rlimit is a plain struct; getrlimit writes into it.
    let mut limit: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `limit` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur as u64)
}
