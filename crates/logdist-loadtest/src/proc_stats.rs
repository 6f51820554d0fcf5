//! CPU time, context switches, system calls and memory of a process, from
//! Linux `/proc` and, for system calls, `perf`.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};

/// User and system CPU seconds a process has used so far (utime and stime
/// of `/proc/<pid>/stat`, all its threads).
pub fn cpu_times(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime / ticks, stime / ticks))
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_times(pid).map(|(user, sys)| user + sys)
}

/// Context switches (voluntary and involuntary) of all of a process's
/// threads: `/proc/<pid>/status` has the main thread's only, so this sums
/// `/proc/<pid>/task/*/status`. Threads that have ended no longer count.
pub fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// What a process has used up to one moment: per-message figures are
/// differences of two of these.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessCounters {
    pub user_secs: f64,
    pub sys_secs: f64,
    pub context_switches: u64,
    /// System calls entered, when `perf` counts them.
    pub syscalls: Option<u64>,
}

impl ProcessCounters {
    /// CPU and context switches of `pid` now (no system calls).
    fn read(pid: u32) -> Option<Self> {
        let (user_secs, sys_secs) = cpu_times(pid)?;
        Some(ProcessCounters {
            user_secs,
            sys_secs,
            context_switches: context_switches(pid)?,
            syscalls: None,
        })
    }
}

/// What a process cost per message over a window: CPU (user and system
/// apart), context switches and system calls per message, and its CPU as a
/// share of one core.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcessCost {
    /// Messages the analyzers received in the window.
    pub messages: u64,
    pub secs: f64,
    /// User + system CPU, % of one core.
    pub cpu_pct: f64,
    pub user_us_per_msg: f64,
    pub sys_us_per_msg: f64,
    pub ctx_switches_per_msg: f64,
    /// None when `perf` could not count system calls.
    pub syscalls_per_msg: Option<f64>,
}

impl ProcessCost {
    /// The cost between two readings `secs` apart, over `messages` messages.
    /// None without messages (nothing to divide by).
    pub fn between(
        before: &ProcessCounters,
        after: &ProcessCounters,
        secs: f64,
        messages: u64,
    ) -> Option<ProcessCost> {
        if messages == 0 || secs <= 0.0 {
            return None;
        }
        let n = messages as f64;
        let user = (after.user_secs - before.user_secs).max(0.0);
        let sys = (after.sys_secs - before.sys_secs).max(0.0);
        Some(ProcessCost {
            messages,
            secs,
            cpu_pct: (user + sys) / secs * 100.0,
            user_us_per_msg: user * 1e6 / n,
            sys_us_per_msg: sys * 1e6 / n,
            ctx_switches_per_msg: after
                .context_switches
                .saturating_sub(before.context_switches) as f64
                / n,
            syscalls_per_msg: after
                .syscalls
                .zip(before.syscalls)
                .map(|(a, b)| a.saturating_sub(b) as f64 / n),
        })
    }
}

/// Reads a process's counters over its life, and across a restart (the
/// crash profile's logdist gets a new pid): the counts of earlier
/// processes are carried over, so differences stay meaningful.
#[derive(Debug)]
pub struct ProcessMeter {
    pid: u32,
    syscalls: Option<SyscallCounter>,
    /// What the processes before this one used, up to their last reading.
    carried: ProcessCounters,
    last: ProcessCounters,
}

impl ProcessMeter {
    /// Meter `pid`; with `count_syscalls`, `perf` counts its system calls.
    pub fn new(pid: u32, count_syscalls: bool) -> Self {
        ProcessMeter {
            pid,
            syscalls: count_syscalls.then(|| SyscallCounter::start(pid)),
            carried: ProcessCounters::default(),
            last: ProcessCounters::default(),
        }
    }

    pub fn read(&mut self) -> Option<ProcessCounters> {
        let now = ProcessCounters::read(self.pid)?;
        let now = ProcessCounters {
            user_secs: now.user_secs + self.carried.user_secs,
            sys_secs: now.sys_secs + self.carried.sys_secs,
            context_switches: now.context_switches + self.carried.context_switches,
            // One counter goes on across restarts.
            syscalls: self.syscalls.as_ref().and_then(SyscallCounter::total),
        };
        self.last = now;
        Some(now)
    }

    /// Go on with the process `pid`, which replaced the metered one.
    pub fn follow(&mut self, pid: u32) {
        self.carried = self.last;
        self.pid = pid;
        if let Some(counter) = &mut self.syscalls {
            counter.attach(pid);
        }
    }

    /// Why system calls are not counted, if they are not.
    pub fn syscalls_unavailable(&self) -> Option<String> {
        match &self.syscalls {
            Some(counter) => counter.unavailable(),
            None => Some("not asked for".into()),
        }
    }

    pub fn stop(&mut self) {
        if let Some(counter) = &mut self.syscalls {
            counter.stop();
        }
    }
}

/// How often `perf stat` reports the count: how stale a reading can be.
const PERF_INTERVAL_MS: u32 = 100;

/// Counts a process's system calls with `perf stat -e raw_syscalls:sys_enter
/// -p <pid> -I 100`, run as a child: its interval counts are added up as
/// they arrive, so a reading is at most 100 ms behind. Counting makes each
/// system call of the process a little slower (a tracepoint).
#[derive(Debug)]
pub struct SyscallCounter {
    total: Arc<AtomicU64>,
    /// Set once `perf` printed a count.
    counting: Arc<AtomicBool>,
    /// Why there is no count (perf missing, not permitted, exited).
    failure: Arc<Mutex<Option<String>>>,
    /// Which `perf` is the current one: one replaced by `attach` says nothing.
    generation: Arc<AtomicU64>,
    child: Option<tokio::process::Child>,
}

impl SyscallCounter {
    pub fn start(pid: u32) -> Self {
        let mut counter = SyscallCounter {
            total: Arc::new(AtomicU64::new(0)),
            counting: Arc::new(AtomicBool::new(false)),
            failure: Arc::new(Mutex::new(None)),
            generation: Arc::new(AtomicU64::new(0)),
            child: None,
        };
        counter.attach(pid);
        counter
    }

    /// (Re)start `perf` on `pid`; the total goes on.
    fn attach(&mut self, pid: u32) {
        if let Some(mut old) = self.child.take() {
            let _ = old.start_kill();
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let spawned = tokio::process::Command::new("perf")
            .args(["stat", "-e", "raw_syscalls:sys_enter", "-x", ","])
            .arg("-I")
            .arg(PERF_INTERVAL_MS.to_string())
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                *self.failure.lock() = Some(format!("cannot run perf: {e}"));
                return;
            }
        };
        let stderr = child.stderr.take().expect("stderr is piped");
        let (total, counting, failure, current) = (
            self.total.clone(),
            self.counting.clone(),
            self.failure.clone(),
            self.generation.clone(),
        );
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut complaints = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                // "<time>,<count>,,raw_syscalls:sys_enter,..." every interval.
                let mut fields = line.trim().split(',');
                let count = fields.nth(1).and_then(|c| c.parse::<u64>().ok());
                match count {
                    Some(n) if line.contains("raw_syscalls:sys_enter") => {
                        total.fetch_add(n, Ordering::Relaxed);
                        counting.store(true, Ordering::Release);
                    }
                    _ if !line.trim().is_empty() && complaints.len() < 3 => {
                        complaints.push(line.trim().to_string())
                    }
                    _ => {}
                }
            }
            let mut failure = failure.lock();
            if failure.is_none() && current.load(Ordering::Acquire) == generation {
                *failure = Some(if counting.load(Ordering::Acquire) {
                    "perf stopped counting before the end".to_string()
                } else {
                    format!("perf could not count: {}", complaints.join(" / "))
                });
            }
        });
        self.child = Some(child);
    }

    /// System calls counted so far; None when perf does not count (any more).
    pub fn total(&self) -> Option<u64> {
        if self.failure.lock().is_some() {
            return None;
        }
        Some(self.total.load(Ordering::Relaxed))
    }

    pub fn unavailable(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// End `perf` (our child); from now on there is no count.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            *self.failure.lock() = Some("stopped".into());
            let _ = child.start_kill();
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (e.g. "VmRSS", "VmHWM"), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = value.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// Turns successive CPU-time readings into "% of one core" over each interval.
#[derive(Debug)]
pub struct CpuMeter {
    pid: u32,
    last: Option<(Instant, f64)>,
    first: Option<(Instant, f64)>,
}

impl CpuMeter {
    pub fn new(pid: u32) -> Self {
        let mut m = CpuMeter {
            pid,
            last: None,
            first: None,
        };
        m.sample();
        m
    }

    /// CPU % of one core since the previous sample.
    pub fn sample(&mut self) -> Option<f64> {
        let now = Instant::now();
        let cpu = cpu_seconds(self.pid)?;
        let pct = self.last.and_then(|(t, c)| {
            let wall = now.duration_since(t).as_secs_f64();
            (wall > 0.0).then(|| (cpu - c) / wall * 100.0)
        });
        self.last = Some((now, cpu));
        if self.first.is_none() {
            self.first = Some((now, cpu));
        }
        pct
    }

    /// CPU % of one core since the meter was created (up to the last sample).
    pub fn average(&self) -> Option<f64> {
        let (wall, cpu) = self.totals()?;
        (wall > 0.0).then(|| cpu / wall * 100.0)
    }

    /// Wall-clock and CPU seconds from the first to the last sample.
    pub fn totals(&self) -> Option<(f64, f64)> {
        let ((t0, c0), (t1, c1)) = (self.first?, self.last?);
        Some((t1.duration_since(t0).as_secs_f64(), c1 - c0))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        let rss = status_bytes(pid, "VmRSS").unwrap();
        let hwm = status_bytes(pid, "VmHWM").unwrap();
        assert!(rss > 0 && hwm >= rss / 2);
        assert!(status_bytes(pid, "NoSuchField").is_none());
        let mut m = CpuMeter::new(pid);
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(m.sample().is_some());
    }
}
