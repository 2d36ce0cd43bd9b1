//! Runs the test upstream ([`edgefleet_e2e::pods`], a test double of the kubelet-facing API:
//! one pod whose exec, attach, port-forward, logs and cp speak the real protocols) until
//! interrupted, for trying kubectl against it by hand:
//!
//! ```text
//! cargo run -p edgefleet-e2e --bin test-upstream -- --kubeconfig /tmp/pods.kubeconfig
//! kubectl --kubeconfig /tmp/pods.kubeconfig exec -i edge-pod -- cat
//! ```

use std::path::PathBuf;

use clap::Parser;
use edgefleet_e2e::pods::PodServer;

#[derive(Parser)]
struct Args {
    /// Where to write a kubeconfig for it.
    #[arg(long)]
    kubeconfig: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = PodServer::start()?;
    server.write_kubeconfig(&args.kubeconfig)?;
    println!(
        "test upstream serving on https://{}; kubeconfig in {}",
        server.addr,
        args.kubeconfig.display()
    );
    // Serve until killed: the server runs on its own runtime threads.
    loop {
        std::thread::park();
    }
}
