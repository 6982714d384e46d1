//! What a process cost: CPU seconds and peak resident memory, from the kernel.
//!
//! Every benchmarked client (ours or Kafka's) runs as a child process of its
//! own, so that one figure covers exactly one client, startup included. Its CPU
//! time is the growth of `getrusage(RUSAGE_CHILDREN)` across its run (the
//! kernel adds a child's user and system time, all threads, when it is reaped;
//! the children run one at a time). Its peak memory is `VmHWM` from
//! `/proc/<pid>/status`, the high-water mark of its resident set, read while it
//! runs. Brokers are long-lived, so their CPU comes from `/proc/<pid>/stat`
//! before and after.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::Instant;

use super::BenchError;

/// CPU time of every child process reaped so far.
pub fn children_cpu() -> Duration {
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(usage) => timeval(usage.user_time()) + timeval(usage.system_time()),
        Err(_) => Duration::ZERO,
    }
}

fn timeval(t: nix::sys::time::TimeVal) -> Duration {
    Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64)
}

/// User plus system CPU time of a running process, all threads (`/proc/<pid>/stat`).
pub fn process_cpu(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .map(|t| t as u64)
        .unwrap_or(100)
}

/// utime and stime are the 14th and 15th fields; the command name (2nd) may
/// hold spaces, so fields are counted after its closing parenthesis.
fn parse_stat_cpu(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_micros(ticks * 1_000_000 / ticks_per_second))
}

/// Peak resident set of a running process in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A finished child: what it printed and what it cost.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Its standard output.
    pub stdout: String,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// User plus system CPU time, all threads.
    pub cpu: Duration,
    /// Highest resident set seen, in bytes.
    pub peak_rss_bytes: u64,
}

/// Runs `command` to its end (killing it after `timeout`), with its standard
/// error in `stderr_log`, and measures it. A non-zero exit is an error that
/// quotes the end of that log.
pub async fn run_measured(
    mut command: Command,
    what: &str,
    stderr_log: &Path,
    timeout: Duration,
) -> Result<Measured, BenchError> {
    let log = std::fs::File::create(stderr_log).map_err(|e| BenchError::io(stderr_log, e))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true);
    let cpu_before = children_cpu();
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| BenchError::Spawn {
        what: what.to_string(),
        source: e,
    })?;
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let mut peak = 0u64;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let status: ExitStatus = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| BenchError::Spawn { what: what.to_string(), source: e })?,
            _ = poll.tick() => {
                if let Some(rss) = pid.and_then(peak_rss) {
                    peak = peak.max(rss);
                }
            }
            _ = &mut deadline => {
                let _ = child.kill().await;
                return Err(BenchError::Timeout { what: what.to_string(), after: timeout, log: stderr_log.to_path_buf() });
            }
        }
    };
    let wall = started.elapsed();
    let cpu = children_cpu().saturating_sub(cpu_before);
    let stdout = reader.await.unwrap_or_default();
    if !status.success() {
        return Err(BenchError::ChildFailed {
            what: what.to_string(),
            status: status.to_string(),
            log: stderr_log.to_path_buf(),
            tail: tail(stderr_log, 12),
        });
    }
    Ok(Measured {
        stdout,
        wall,
        cpu,
        peak_rss_bytes: peak,
    })
}

/// The last `lines` lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// CPU time of the brokers, summed, from their pids' `/proc` entries.
#[derive(Debug, Clone)]
pub struct BrokerCpu {
    pids: Vec<i32>,
}

impl BrokerCpu {
    /// Watches these broker JVMs; an empty list (a cluster not started here) reads nothing.
    pub fn new(pids: Vec<i32>) -> Self {
        BrokerCpu { pids }
    }

    /// Their CPU time so far, or `None` when there is no broker to read.
    pub fn now(&self) -> Option<Duration> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&pid| process_cpu(pid)).sum()
    }

    /// The CPU time so far of their JIT compiler threads (HotSpot names them
    /// `C1 CompilerThreadN` and `C2 CompilerThreadN`), or `None` when there
    /// is no broker to read. A young broker compiles for minutes, on the same
    /// cores as the client measured.
    pub fn compiling(&self) -> Option<Duration> {
        if self.pids.is_empty() {
            return None;
        }
        let ticks = clock_ticks_per_second();
        let mut total = Duration::ZERO;
        for pid in &self.pids {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
            for task in tasks.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if is_compiler_thread(&comm)
                    && let Some(cpu) = std::fs::read_to_string(path.join("stat"))
                        .ok()
                        .and_then(|stat| parse_stat_cpu(&stat, ticks))
                {
                    total += cpu;
                }
            }
        }
        Some(total)
    }
}

/// Warm-up rounds at most before measured runs, when the brokers' JIT
/// compilers stay busy.
pub const WARM_UP_ROUNDS: u32 = 4;

/// The brokers' CPU and their compilers' share of it over a stretch of time.
#[derive(Debug, Clone, Copy)]
pub struct Compiling {
    /// Seconds of CPU the brokers took.
    pub cpu_secs: f64,
    /// Seconds of it their JIT compiler threads took.
    pub jit_secs: f64,
}

impl Compiling {
    /// The compilers took a tenth of the brokers' CPU or less: measured runs may start.
    pub fn quiet(&self) -> bool {
        self.jit_secs <= 0.10 * self.cpu_secs
    }

    /// For progress lines.
    pub fn describe(&self) -> String {
        format!(
            "the brokers' JIT compilers took {:.1} of their {:.1} CPU s ({:.0} %)",
            self.jit_secs,
            self.cpu_secs,
            100.0 * self.jit_secs / self.cpu_secs.max(1e-9)
        )
    }
}

/// A reading of the brokers' CPU and their compilers', to tell what a stretch took.
#[derive(Debug, Clone, Copy)]
pub struct CompilingMark {
    cpu: Duration,
    jit: Duration,
}

impl BrokerCpu {
    /// Now, to compare with later; `None` when there is no broker to read.
    pub fn mark(&self) -> Option<CompilingMark> {
        let (cpu, jit) = self.now().zip(self.compiling())?;
        Some(CompilingMark { cpu, jit })
    }

    /// What the brokers and their compilers took since `mark`.
    pub fn since(&self, mark: Option<CompilingMark>) -> Option<Compiling> {
        let (before, now) = mark.zip(self.mark())?;
        Some(Compiling {
            cpu_secs: now.cpu.saturating_sub(before.cpu).as_secs_f64(),
            jit_secs: now.jit.saturating_sub(before.jit).as_secs_f64(),
        })
    }
}

/// Whether a thread's name (its `comm`, cut at 15 bytes) is HotSpot's JIT compiler's.
fn is_compiler_thread(comm: &str) -> bool {
    let comm = comm.trim_end();
    comm.starts_with("C1 Compiler") || comm.starts_with("C2 Compiler")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat =
            "4242 (java main) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 40 0 1 2 3";
        assert_eq!(
            parse_stat_cpu(stat, 100),
            Some(Duration::from_secs(3)),
            "250 + 50 ticks at 100 per second"
        );
        assert_eq!(parse_stat_cpu("garbage", 100), None);
    }

    #[test]
    fn the_brokers_are_warm_once_their_compilers_take_a_tenth_of_their_cpu_or_less() {
        let busy = Compiling {
            cpu_secs: 20.6,
            jit_secs: 5.5,
        };
        assert!(!busy.quiet());
        assert!(busy.describe().contains("5.5 of their 20.6 CPU s (27 %)"));
        let quiet = Compiling {
            cpu_secs: 12.0,
            jit_secs: 1.2,
        };
        assert!(quiet.quiet());
    }

    #[test]
    fn the_jit_compilers_threads_are_told_by_their_names() {
        assert!(is_compiler_thread("C2 CompilerThre\n"));
        assert!(is_compiler_thread("C1 CompilerThre"));
        assert!(!is_compiler_thread("data-plane-kafk\n"));
        assert!(!is_compiler_thread("GC Thread#0"));
    }

    #[test]
    fn peak_rss_is_the_high_water_mark_in_bytes() {
        let status =
            "Name:\tmetrocloud\nVmPeak:\t  900 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1234 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_peak_rss() {
        let pid = std::process::id();
        assert!(peak_rss(pid).is_some_and(|bytes| bytes > 0));
        assert!(process_cpu(pid as i32).is_some());
    }
}
