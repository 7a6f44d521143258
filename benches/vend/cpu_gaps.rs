//! How much CPU the machine itself takes away: one thread per CPU, pinned, spins on the clock
//! and counts the gaps in which it did not run (other tasks, interrupts, a hypervisor that
//! deschedules the virtual CPU). On a shared or virtual host these gaps, not the server, can
//! set a millisecond tail; printed beside the latency figures so a run can be read against
//! them.

use std::time::{Duration, Instant};

/// A gap shorter than this is the loop's own cost, not a preemption.
const NOTICED: Duration = Duration::from_micros(50);

/// What the spinning threads saw over the probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gaps {
    /// Time not run, per CPU and second of the probe (ms).
    pub lost_ms_per_s: f64,
    /// Gaps of 1 ms or longer, all CPUs, per second.
    pub over_1ms_per_s: f64,
    /// The longest gap (ms).
    pub max_ms: f64,
}

/// Spins one pinned thread per CPU this process may run on for `span`.
pub fn probe(span: Duration) -> Gaps {
    let cpus = allowed_cpus();
    let per_cpu: Vec<(Duration, u32, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| s.spawn(move || spin(cpu, span)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let secs = span.as_secs_f64().max(1e-9);
    let n = per_cpu.len().max(1) as f64;
    Gaps {
        lost_ms_per_s: per_cpu
            .iter()
            .map(|(lost, _, _)| lost.as_secs_f64() * 1e3)
            .sum::<f64>()
            / n
            / secs,
        over_1ms_per_s: per_cpu.iter().map(|(_, k, _)| f64::from(*k)).sum::<f64>() / secs,
        max_ms: per_cpu
            .iter()
            .map(|(_, _, m)| m.as_secs_f64() * 1e3)
            .fold(0.0, f64::max),
    }
}

/// (time in gaps, gaps of 1 ms or more, longest gap) for a thread spinning on `cpu`.
fn spin(cpu: usize, span: Duration) -> (Duration, u32, Duration) {
    pin(cpu);
    let start = Instant::now();
    let (mut lost, mut long, mut max) = (Duration::ZERO, 0u32, Duration::ZERO);
    let mut last = start;
    while last - start < span {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap >= NOTICED {
            lost += gap;
            max = max.max(gap);
            if gap >= Duration::from_millis(1) {
                long += 1;
            }
        }
    }
    (lost, long, max)
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a valid, zeroed cpu_set_t of the size passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin(cpu: usize) {
    // SAFETY: `set` is a valid cpu_set_t; the call only changes this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
