//! Giving each I/O thread a nice value of its own (`server.io_thread_nice`).
//!
//! On a machine the broker shares (with Redis, a log shipper, its own background writers),
//! a vend waits whenever its I/O thread is runnable but another task holds the CPU. The
//! scheduler shares CPU time in proportion to weight, so a negative nice value on the I/O
//! threads alone (the background runtime stays as it was started) puts the hot path ahead of
//! everything else without changing how the rest of the process is scheduled.

use std::io;

/// Sets the calling thread's nice value (on Linux a nice value belongs to the thread).
pub(crate) fn set_current(nice: i32) -> io::Result<()> {
    let tid = rustix::thread::gettid();
    rustix::process::setpriority_process(Some(tid), nice).map_err(io::Error::from)?;
    let now = rustix::process::getpriority_process(Some(tid)).map_err(io::Error::from)?;
    if now == nice {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the nice value is {now} after asking for {nice}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_nice_value_asked_for_and_only_that_thread() {
        let before = rustix::process::getpriority_process(None).unwrap();
        // Raising the value (lowering priority) needs no privilege.
        let target = (before + 3).min(19);
        std::thread::spawn(move || {
            set_current(target).unwrap();
            let tid = rustix::thread::gettid();
            assert_eq!(
                rustix::process::getpriority_process(Some(tid)).unwrap(),
                target
            );
        })
        .join()
        .unwrap();
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap(),
            before,
            "the calling thread keeps its own value"
        );
    }
}
