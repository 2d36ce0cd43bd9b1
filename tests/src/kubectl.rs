//! kubectl as a process for one kubeconfig, with its own discovery cache (`KUBECACHEDIR`, so
//! that tests never read each other's discovery) and optional environment variables such as
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgefleet_testkit::eventually;

/// kubectl with one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Kubectl {
    /// kubectl for `kubeconfig`; the discovery cache lives next to it.
    pub fn new(kubeconfig: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache_dir: kubeconfig.with_extension("cache"),
            env: Vec::new(),
        }
    }

    /// The same kubectl with `key=value` in its environment.
    pub fn with_env(&self, key: &str, value: &str) -> Kubectl {
        let mut k = self.clone();
        k.env.push((key.to_string(), value.to_string()));
        k
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The command, without stdio set up.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("KUBECACHEDIR", &self.cache_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs to completion, feeding `stdin` (or none). A kubectl still running after
    /// [`RUN_DEADLINE`] is killed and the test fails, rather than hanging the suite.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = self
            .command(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let input = input.to_vec();
            // A writer thread, so a large stdin cannot deadlock against a full stdout pipe.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        finish(child, &format!("kubectl {args:?}"))
    }

    /// Must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    /// Must succeed with `stdin`; returns stdout.
    pub fn ok_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed, printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs kubectl on a pseudo-terminal of `rows` × `cols` (util-linux `script`), for
    /// `exec -t`; returns what the terminal showed. Its stdin stays open until it exits, so
    /// nothing reads as end of input (which a terminal would send as ^D).
    pub fn in_terminal(&self, rows: u16, cols: u16, args: &[&str]) -> Output {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let line = std::iter::once("kubectl".to_string())
            .chain(["--kubeconfig", &self.kubeconfig.to_string_lossy()].map(quote))
            .chain(args.iter().map(|a| quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new("script")
            .args([
                "--quiet",
                "--return",
                "--command",
                &format!("stty rows {rows} cols {cols}; exec {line}"),
                "/dev/null",
            ])
            .env("KUBECACHEDIR", &self.cache_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script runs");
        let stdin = child.stdin.take();
        let out = finish(child, &format!("kubectl {args:?} in a terminal"));
        drop(stdin);
        out
    }

    /// Starts kubectl with all three stdio streams piped (for `get -w`, `logs -f`,
    /// `port-forward`); read stdout with [`Lines`].
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs")
    }
}

/// How long one kubectl command may run before the test gives up on it.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Collects `child`'s output as it exits, killing it after [`RUN_DEADLINE`].
fn finish(mut child: Child, what: &str) -> Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for kubectl") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A grandchild may still hold the pipe: do not wait long for the rest.
            let stderr = stderr
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            let stderr = String::from_utf8_lossy(&stderr).into_owned();
            panic!("{what} did not finish within {RUN_DEADLINE:?}; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.recv().unwrap_or_default(),
        stderr: stderr.recv().unwrap_or_default(),
    }
}

/// The lines a child prints, read on a thread, waited for with a deadline.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    /// Every line so far, for failure messages.
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first further line matching `pred`, or a panic after `timeout` (× patience).
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        eventually!(
            blocking,
            within = timeout,
            self.next_matching(&pred),
            "a matching line; saw {:?}",
            self.seen
        )
    }

    /// The first matching line of those printed so far, if any.
    fn next_matching(&mut self, pred: &impl Fn(&str) -> bool) -> Option<String> {
        loop {
            match self.rx.try_recv() {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => panic!(
                    "the output ended without a matching line; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Every remaining line, until the child closes its stdout.
    pub fn rest(&mut self) -> Vec<String> {
        let rest: Vec<String> = self.rx.iter().collect();
        self.seen.extend(rest.iter().cloned());
        rest
    }
}

/// Kills `child` (if still running) and returns what it wrote to stderr.
pub fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    err
}
