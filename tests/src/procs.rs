//! Child processes of the benchmark, and what `/proc` says about them.
//!
//! Each child's stdout and stderr go, line by line, to its log file; lines the caller cares
//! about (a predicate chosen at spawn) are also sent on a channel, stamped with the time they
//! arrived. Stamping on arrival rather than parsing the child's own log timestamps keeps every
//! duration on one clock (the driver's monotonic clock); a line costs the pipe's latency
//! (microseconds) on top.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A line a child printed, with the time the driver read it.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// Lines of interest from one child.
pub type Lines = mpsc::UnboundedReceiver<Line>;

/// A child process, killed (SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Proc {
    /// Starts `cmd` with its output appended to `log`; lines for which `interesting` holds are
    /// also sent on the returned channel.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        interesting: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> anyhow::Result<(Proc, Lines)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let file = Arc::new(Mutex::new(file));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let interesting = Arc::new(interesting);
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let (file, tx, interesting) = (file.clone(), tx.clone(), interesting.clone());
            std::thread::spawn(move || pump(pipe, &file, &tx, &*interesting));
        }
        Ok((
            Proc {
                child,
                name: name.to_string(),
                log: log.to_path_buf(),
            },
            rx,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SIGKILL, as a crash, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails if the process has exited, naming its log.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); see {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pump(
    pipe: Box<dyn std::io::Read + Send>,
    file: &Mutex<File>,
    tx: &mpsc::UnboundedSender<Line>,
    interesting: &(dyn Fn(&str) -> bool + Send + Sync),
) {
    for text in BufReader::new(pipe).lines().map_while(Result::ok) {
        let at = Instant::now();
        if let Ok(mut file) = file.lock() {
            let _ = writeln!(file, "{text}");
        }
        if interesting(&text) {
            let _ = tx.send(Line { at, text });
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads lines until one satisfies `pred`, or fails after `timeout`.
pub async fn wait_line(
    lines: &mut Lines,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&str) -> bool,
) -> anyhow::Result<Line> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) if pred(&line.text) => return Ok(line),
            Ok(Some(_)) => {}
            Ok(None) => bail!("the process exited while waiting for {what}"),
            Err(_) => bail!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we run on).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds a process has used (all its threads, live and exited), from
/// `/proc/<pid>/stat`; 0 for a process that is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_ticks(&stat) as f64 / clock_ticks()
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
fn stat_cpu_ticks(stat: &str) -> u64 {
    // The command name (field 2, in parentheses) may contain spaces and parentheses; the
    // fields after its last ')' are plain, starting with field 3 (state).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// CPU seconds of several processes together.
pub fn cpu_seconds_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// Resident memory of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of several processes together, KiB.
pub fn rss_kib_of(pids: &[u32]) -> u64 {
    pids.iter().map(|p| rss_kib(*p)).sum()
}

/// Open sockets of a process (entries of `/proc/<pid>/fd` that are sockets).
pub fn sockets(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Open sockets of several processes together.
pub fn sockets_of(pids: &[u32]) -> usize {
    pids.iter().map(|p| sockets(*p)).sum()
}

/// The load average over 1, 5 and 15 minutes, as `/proc/loadavg` gives it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A loopback address with a port that was free a moment ago (for processes that must come
/// back on the same port after a restart).
pub fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Waits until a process's CPU use stays below `cores` for `window`, or `limit` passes: lets
/// background work (status writes after a reconnect storm) finish before memory is read.
pub async fn settle(pid: u32, cores: f64, window: Duration, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let before = cpu_seconds(pid);
        tokio::time::sleep(window).await;
        let used = cpu_seconds(pid) - before;
        if used / window.as_secs_f64() < cores || started.elapsed() >= limit {
            return started.elapsed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis; utime 1234, stime 56.
        let stat =
            "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 9 0 0 0 1234 56 0 0 20 0 3 0 1 2 3";
        assert_eq!(stat_cpu_ticks(stat), 1290);
        assert_eq!(stat_cpu_ticks(""), 0);
    }

    #[test]
    fn this_process_has_a_resident_size_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        // The CPU clock moves in ticks (10 ms at USER_HZ=100), and a loaded machine may give
        // this thread none for a long while: spin until it has moved, with a deadline.
        let cpu = edgefleet_testkit::eventually!(
            blocking,
            {
                let spin = std::time::Instant::now();
                while spin.elapsed() < Duration::from_millis(10) {}
                Some(cpu_seconds(me)).filter(|cpu| *cpu > 0.0)
            },
            "this process's CPU clock to move"
        );
        assert!(cpu > 0.0);
    }
}
