//! Kernel clocks for the open-loop client: a `timerfd` that wakes the schedule on time, and
//! receive timestamps (`SO_TIMESTAMPNS`) that say when a response reached the client's socket,
//! whether or not the client was on a CPU to read it then. Both use `CLOCK_REALTIME`, the
//! clock of socket timestamps, so schedule and arrival compare directly.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// `CLOCK_REALTIME` now, in nanoseconds.
pub fn real_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A one-shot absolute timer on `CLOCK_REALTIME`, awaited through the runtime's poller, so
/// the schedule and the connections share one thread without tokio's millisecond timer wheel.
pub struct Timer(AsyncFd<OwnedFd>);

impl Timer {
    /// A disarmed timer.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the descriptor is owned from here on.
        let fd = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is not owned elsewhere.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the descriptor is owned by the AsyncFd and closed only when it is dropped.
        Ok(Self(unsafe { AsyncFd::register(owned) }?))
    }

    /// Returns at `at_ns` (`CLOCK_REALTIME`), at once if that has passed.
    pub async fn until(&self, at_ns: u64) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                // A zero it_value would disarm the timer instead of firing it.
                tv_nsec: ((at_ns % 1_000_000_000).max(1)) as libc::c_long,
            },
        };
        let fd = self.0.get_ref().as_raw_fd();
        // SAFETY: valid descriptor and itimerspec; the old value is not asked for.
        if unsafe {
            libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.0.readable().await?;
            let read = guard.try_io(|inner| {
                let mut expirations = 0u64;
                // SAFETY: reads 8 bytes into a u64, as timerfd requires.
                let n = unsafe {
                    libc::read(
                        inner.get_ref().as_raw_fd(),
                        (&mut expirations as *mut u64).cast(),
                        8,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Asks the kernel to stamp every segment this socket receives.
pub fn enable_rx_timestamps(stream: &TcpStream) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: valid socket and option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what is there, waiting for readiness: the byte count and the receive timestamp
/// (ns, `CLOCK_REALTIME`) of the last segment read, when the kernel gave one.
pub async fn recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || recv_now(stream.as_raw_fd(), buf)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn recv_now(fd: libc::c_int, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    // Room for one control message carrying a timespec.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` describes valid buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}

/// Puts the calling thread in `SCHED_BATCH`: it still gets its fair share of CPU, but its
/// wake-ups do not preempt whatever is running, so the load generator does not cut into the
/// broker's (or Redis's) requests on a machine they share.
pub fn yield_on_wakeup(policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on the calling thread with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
