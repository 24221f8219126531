//! What the watcher uses, read from /proc: resident memory, descriptors, threads and CPU time,
//! and the slope of a series after the warm-up.

use std::time::Duration;

use anyhow::{Context, Result};

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    /// Since the soak started.
    pub(super) at: Duration,
    pub(super) rss_kib: u64,
    pub(super) fds: usize,
    pub(super) threads: u64,
    /// utime + stime, in clock ticks.
    pub(super) cpu_ticks: u64,
}

/// Reads `pid`'s usage now; `at` is stored as given.
pub(super) fn usage(pid: u32, at: Duration) -> Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("/proc/{pid}/fd"))?
        .count();
    Ok(Usage {
        at,
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
        cpu_ticks: cpu_ticks(pid)?,
    })
}

/// Whether `pid` is alive: it exists and is not a zombie (a zombie is a watcher that exited).
pub(super) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// utime + stime of `pid`, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'; utime
    // and stime are fields 14 and 15 of proc(5), and `rest` starts at field 3.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("short /proc/PID/stat")?
            .parse()
            .context("/proc/PID/stat")
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second.
pub(crate) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The least-squares slope of `points` (x, y), in y per x; 0 with fewer than two distinct x.
pub(super) fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

#[cfg(test)]
mod tests {
    use super::slope;

    #[test]
    fn slope_of_a_line_and_of_noise_around_it() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), 2.0);
        let noisy = [(0.0, 10.0), (1.0, 12.0), (2.0, 10.0), (3.0, 12.0)];
        assert!((slope(&noisy) - 0.4).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), 0.0);
    }

    #[test]
    fn this_process_can_be_read() {
        let usage = super::usage(std::process::id(), std::time::Duration::ZERO);
        let usage = usage.map_err(|e| e.to_string());
        assert!(
            usage
                .as_ref()
                .is_ok_and(|u| u.rss_kib > 0 && u.threads >= 1 && u.fds >= 3),
            "{usage:?}"
        );
        assert!(super::alive(std::process::id()));
    }
}
