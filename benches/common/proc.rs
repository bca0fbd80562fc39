//! The benches' child processes: stopped when dropped, and what is read of
//! them in `/proc` (CPU time, for one process or a process and its children,
//! nginx's master and workers).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// CPU seconds (user + system) of a process so far; NaN if it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // USER_HZ is 100 on Linux
}

/// CPU seconds of a process and its live children (one level: nginx's
/// workers under its master).
#[allow(dead_code)] // not every bench measures a process tree
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    cpu_seconds(pid)
        + children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .map(cpu_seconds)
            .sum::<f64>()
}

/// A child killed (SIGTERM, then SIGKILL) when dropped.
pub struct Reaped(pub Child);

impl Reaped {
    #[allow(dead_code)] // not every bench asks
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
