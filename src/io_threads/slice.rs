//! Asking the scheduler for a shorter time slice for each I/O thread
//! (`server.io_thread_slice_us`).
//!
//! Linux's EEVDF scheduler (6.6 and later; per-task slices from 6.12) gives every task a
//! deadline of its eligible time plus its slice. A thread asking for a short slice gets an
//! earlier deadline, so when it wakes (a request or a Redis reply arrived) it preempts a task
//! running on the default slice instead of waiting for that slice to end. Unlike a nice
//! value it leaves the thread's CPU share unchanged: at saturation a co-located Redis keeps
//! its share, only the wake-up latency of the hot path drops. No privilege is needed.

use std::io;
use std::time::Duration;

/// The shortest and longest slice the kernel accepts (it clamps to these), in microseconds.
pub(crate) const RANGE_US: std::ops::RangeInclusive<u32> = 100..=100_000;

/// `struct sched_attr` as of its first version (48 bytes), which every kernel since 3.14
/// accepts.
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

#[cfg(target_os = "linux")]
fn get(tid: libc::pid_t) -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a writable `sched_attr` of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut SchedAttr,
            SCHED_ATTR_SIZE,
            0u32,
        )
    };
    if rc == 0 {
        Ok(attr)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
fn set(tid: libc::pid_t, attr: &SchedAttr) -> io::Result<()> {
    // SAFETY: `attr` is a readable `sched_attr` whose `size` field says how long it is.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, attr as *const SchedAttr, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn get(_tid: i32) -> io::Result<SchedAttr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "per-thread time slices exist only on Linux",
    ))
}

#[cfg(not(target_os = "linux"))]
fn set(_tid: i32, _attr: &SchedAttr) -> io::Result<()> {
    get(0).map(|_| ())
}

/// The calling thread's time slice as the scheduler reports it (0 on kernels without
/// per-task slices).
pub(crate) fn current() -> io::Result<Duration> {
    get(0).map(|a| Duration::from_nanos(a.runtime))
}

/// Gives the calling thread a time slice of `slice`, keeping its policy and nice value. Fails
/// when the kernel refuses it or keeps its own slice (before Linux 6.12).
pub(crate) fn set_current(slice: Duration) -> io::Result<()> {
    let mut attr = get(0)?;
    // SCHED_OTHER and SCHED_BATCH: the fair scheduler's policies.
    if attr.policy != 0 && attr.policy != 3 {
        return Err(io::Error::other(
            "the thread is not under the fair scheduler (SCHED_OTHER or SCHED_BATCH)",
        ));
    }
    let asked = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    attr.size = SCHED_ATTR_SIZE;
    attr.flags = 0;
    attr.runtime = asked;
    set(0, &attr)?;
    let now = current()?;
    if now == slice {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the kernel keeps a slice of {now:?} after {slice:?} was asked for \
             (per-thread slices need Linux 6.12 or later)"
        )))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Whether the running kernel keeps a slice per task (Linux 6.12 or later).
    fn kernel_has_per_task_slices() -> bool {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (6, 12)
    }

    #[test]
    fn an_older_kernel_is_reported_rather_than_ignored() {
        if kernel_has_per_task_slices() {
            return;
        }
        let err = std::thread::spawn(|| set_current(Duration::from_micros(250)))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("6.12"), "{err}");
    }

    #[test]
    fn a_thread_gets_the_slice_asked_for_and_keeps_its_nice_value() {
        if !kernel_has_per_task_slices() {
            return;
        }
        let before = current().unwrap();
        let nice_before = rustix::process::getpriority_process(None).unwrap();
        let nice = (nice_before + 2).min(19);
        let asked = Duration::from_micros(250);
        assert_ne!(before, asked);
        std::thread::spawn(move || {
            let tid = rustix::thread::gettid();
            rustix::process::setpriority_process(Some(tid), nice).unwrap();
            set_current(asked).unwrap();
            assert_eq!(current().unwrap(), asked);
            assert_eq!(
                rustix::process::getpriority_process(Some(tid)).unwrap(),
                nice,
                "setting the slice leaves the nice value alone"
            );
        })
        .join()
        .unwrap();
        assert_eq!(
            current().unwrap(),
            before,
            "the calling thread keeps its own slice"
        );
    }
}
