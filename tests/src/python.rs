//! The Python `kubernetes` client as a load generator: `tests/python/burst_create.py` creates
//! Clusters from several threads as fast as the hub answers and prints `created <name>` for each
//! 201. The crash and audit tests kill the hub mid-burst and then check that every create the
//! client saw answered survived (in storage, in the audit trail).
//!
//! ```text
//! let mut burst = Burst::start(&hub.kubeconfig, "crash", 16);
//! let acked = burst.created_at_least(200);   // names answered 201 so far (≥ 200)
//! hub.kill();
//! let acked = burst.finish(acked);            // + whatever was answered before the hub died
//! ```

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::hub::workspace_root;

/// How long one more answered create may take while the hub is up: generous, since the hub
/// answers hundreds a second.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running burst of creates.
pub struct Burst {
    child: Child,
    created: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl Burst {
    /// Starts `writers` threads creating Clusters in `namespace` through `kubeconfig`.
    ///
    /// # Panics
    /// When `python3` cannot be started.
    pub fn start(kubeconfig: &Path, namespace: &str, writers: usize) -> Burst {
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/python/burst_create.py"))
            .arg(kubeconfig)
            .arg(namespace)
            .arg(writers.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, created) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(name) = line.strip_prefix("created ") {
                    let _ = tx.send(name.to_string());
                }
            }
        });
        Burst {
            child,
            created,
            reader: Some(reader),
        }
    }

    /// The names answered 201 so far, once there are at least `n`.
    ///
    /// # Panics
    /// When a further create is not answered within [`CREATE_TIMEOUT`] (× patience).
    pub fn created_at_least(&mut self, n: usize) -> BTreeSet<String> {
        let mut created = BTreeSet::new();
        while created.len() < n {
            let name = self
                .created
                .recv_timeout(edgefleet_testkit::patient(CREATE_TIMEOUT))
                .unwrap_or_else(|_| {
                    panic!("creates stopped being answered after {}", created.len())
                });
            created.insert(name);
        }
        created
    }

    /// Waits for the client to stop (its writers fail once the hub is gone) and adds every name
    /// it reported since to `created`.
    pub fn finish(mut self, mut created: BTreeSet<String>) -> BTreeSet<String> {
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the reader thread ends");
        }
        created.extend(self.created.try_iter());
        created
    }
}

impl Drop for Burst {
    /// A test that fails mid-burst leaves no client running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
