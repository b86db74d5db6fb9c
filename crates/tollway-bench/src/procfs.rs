//! Resident memory and CPU time of processes, from `/proc` (Linux).

use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{json, Value};

/// `VmRSS` of a process, in KiB.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let n = rest.split_whitespace().next().unwrap_or("");
            return n.parse().context("VmRSS");
        }
    }
    anyhow::bail!("no VmRSS in /proc/{pid}/status")
}

/// CPU time of a process in clock ticks: in its own code, and in the kernel on its behalf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticks {
    pub user: u64,
    pub system: u64,
}

impl Ticks {
    fn since(self, start: Ticks) -> Ticks {
        Ticks {
            user: self.user.saturating_sub(start.user),
            system: self.system.saturating_sub(start.system),
        }
    }
}

/// User and system CPU time of a process.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<Ticks> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// CPU ticks of this process.
pub fn self_cpu_ticks() -> anyhow::Result<Ticks> {
    stat_ticks(&std::fs::read_to_string("/proc/self/stat")?)
}

fn stat_ticks(stat: &str) -> anyhow::Result<Ticks> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat.rfind(')').map(|i| &stat[i + 1..]).context("stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime(14) stime(15), i.e. indexes 11 and 12 here.
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(Ticks {
        user: utime,
        system: stime,
    })
}

/// One watched process's figures over a window.
#[derive(Debug, Clone, Default)]
pub struct ProcFigures {
    pub name: String,
    pub pid: u32,
    pub rss_start_kb: Option<u64>,
    pub rss_max_kb: Option<u64>,
    pub rss_end_kb: Option<u64>,
    /// User + system CPU seconds over the window.
    pub cpu_s: Option<f64>,
    /// Of which in the kernel (system time).
    pub sys_cpu_s: Option<f64>,
    ticks_start: Option<Ticks>,
}

impl ProcFigures {
    pub fn to_json(&self) -> Value {
        json!({
            "pid": self.pid,
            "rss_start_kb": self.rss_start_kb,
            "rss_max_kb": self.rss_max_kb,
            "rss_end_kb": self.rss_end_kb,
            "cpu_s": self.cpu_s.map(crate::load::round3),
            "sys_cpu_s": self.sys_cpu_s.map(crate::load::round3),
        })
    }
}

/// Samples processes' RSS (start, max, end) and CPU time (end − start) over a window.
/// The name `loadgen` watches this process.
#[derive(Clone)]
pub struct ProcWatch {
    inner: Arc<Mutex<Vec<ProcFigures>>>,
    clk_tck: u64,
}

impl ProcWatch {
    pub fn new(watch: Vec<(String, u32)>, clk_tck: u64) -> Self {
        let mut v: Vec<ProcFigures> = watch
            .into_iter()
            .map(|(name, pid)| ProcFigures {
                name,
                pid,
                ..Default::default()
            })
            .collect();
        v.push(ProcFigures {
            name: "loadgen".into(),
            pid: std::process::id(),
            ..Default::default()
        });
        Self {
            inner: Arc::new(Mutex::new(v)),
            clk_tck: clk_tck.max(1),
        }
    }

    fn ticks(p: &ProcFigures) -> Option<Ticks> {
        if p.pid == std::process::id() {
            self_cpu_ticks().ok()
        } else {
            cpu_ticks(p.pid).ok()
        }
    }

    pub fn begin(&self) {
        if let Ok(mut v) = self.inner.lock() {
            for p in v.iter_mut() {
                p.ticks_start = Self::ticks(p);
                p.rss_start_kb = rss_kb(p.pid).ok();
                p.rss_max_kb = p.rss_start_kb;
            }
        }
    }

    pub fn sample_rss(&self) {
        if let Ok(mut v) = self.inner.lock() {
            for p in v.iter_mut() {
                if let Ok(r) = rss_kb(p.pid) {
                    p.rss_max_kb = Some(p.rss_max_kb.map_or(r, |m| m.max(r)));
                }
            }
        }
    }

    pub fn finish(&self) -> Vec<ProcFigures> {
        self.sample_rss();
        let Ok(mut v) = self.inner.lock() else {
            return Vec::new();
        };
        for p in v.iter_mut() {
            p.rss_end_kb = rss_kb(p.pid).ok();
            if let (Some(a), Some(b)) = (p.ticks_start, Self::ticks(p)) {
                let d = b.since(a);
                #[allow(clippy::cast_precision_loss)]
                let secs = |t: u64| t as f64 / self.clk_tck as f64;
                p.cpu_s = Some(secs(d.user + d.system));
                p.sys_cpu_s = Some(secs(d.system));
            }
        }
        v.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0";
        assert_eq!(
            stat_ticks(stat).unwrap(),
            Ticks {
                user: 150,
                system: 25
            }
        );
    }

    #[test]
    fn reads_own_figures() {
        assert!(rss_kb(std::process::id()).unwrap() > 0);
        self_cpu_ticks().unwrap();
    }
}
