//! CPU time and memory of a process, from Linux `/proc`.

use std::time::Instant;

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
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
    Some((utime + stime) / ticks)
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
