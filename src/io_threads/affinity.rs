//! Pinning each I/O thread to a CPU of its own (`server.pin_io_threads`).
//!
//! The I/O threads are one per CPU by design, but the scheduler balances CPUs by how many
//! tasks they hold, not by how busy those tasks are. On a machine the broker shares with Redis
//! and a load generator it was seen to put both I/O threads on one CPU, each waiting
//! milliseconds for the other, while Redis and the client shared the other CPU. Pinned, each
//! I/O thread has a CPU to itself to come back to; the other processes still go anywhere.

use std::io;

/// The CPU each of `threads` I/O threads is pinned to: the i-th CPU the process may run on,
/// when there are at least as many of those as threads; otherwise none (two pinned threads
/// sharing a CPU is the stacking that pinning exists to prevent).
pub(crate) fn placement(threads: usize, allowed: &[usize]) -> Vec<Option<usize>> {
    if threads <= allowed.len() {
        allowed.iter().take(threads).copied().map(Some).collect()
    } else {
        vec![None; threads]
    }
}

/// The CPUs the calling thread may run on, ascending (its affinity mask: the machine's CPUs,
/// or a container's cpuset).
pub(crate) fn allowed() -> io::Result<Vec<usize>> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .ok_or_else(|| io::Error::other("the CPU affinity mask cannot be read here"))?
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    Ok(cpus)
}

/// Restricts the calling thread to `cpu`, one of those it may run on (anything else is
/// refused before it reaches the system call).
pub(crate) fn pin_current(cpu: usize) -> io::Result<()> {
    if !allowed()?.contains(&cpu) {
        return Err(io::Error::other(format!(
            "CPU {cpu} is not one this thread may run on"
        )));
    }
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "cannot pin the thread to CPU {cpu}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_each_while_there_are_enough_otherwise_none() {
        assert_eq!(placement(2, &[0, 1]), vec![Some(0), Some(1)]);
        assert_eq!(placement(2, &[2, 5, 7]), vec![Some(2), Some(5)]);
        assert_eq!(placement(1, &[3]), vec![Some(3)]);
        assert_eq!(placement(3, &[0, 1]), vec![None, None, None]);
        assert_eq!(placement(1, &[]), vec![None]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_on_that_cpu_only() {
        let mine = allowed().expect("affinity of this process");
        assert!(!mine.is_empty());
        let last = *mine.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current(last).expect("pin");
            allowed().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![last], "the thread's mask is that one CPU");
        // The calling thread keeps its own mask.
        assert_eq!(allowed().unwrap(), mine);
        assert!(
            pin_current(1 << 20).is_err(),
            "an impossible CPU is refused"
        );
    }
}
