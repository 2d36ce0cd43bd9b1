//! The hub's background tasks, owned by the server and tied to its shutdown.
//!
//! ```text
//!   Tasks::spawn(task) ──► TaskTracker (counts live tasks)
//!                           each task races the CancellationToken
//!   BoundServer::run: serve … shutdown signal … drain connections
//!                     └─► Tasks::shut_down: cancel ─► every task stops at its next await
//!                                           wait  ─► returns once none is left
//! ```
//!
//! A task is stopped by dropping it at an await point: every background loop of the hub (the
//! compactor, the RBAC file reload, the tunnel port, the status controller and its writers, the
//! credential lifecycle) keeps its state in storage, whose writes are atomic, so stopping
//! between two awaits loses nothing. `run` returning then means no task of the hub touches
//! storage, the tunnel port or the audit trail any more.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The background tasks of one hub.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it ends or the hub shuts down.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {}
                () = task => {}
            }
        })
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Stops every task and returns once all have ended. Tasks spawned afterwards are stopped
    /// at once.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Sets its flag when dropped: when the task holding it has really ended.
    struct Ended(Arc<AtomicBool>);

    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn shut_down_returns_only_once_every_task_has_stopped() {
        let tasks = Tasks::new();
        let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
        for flag in &flags {
            let ended = Ended(flag.clone());
            // A loop that would run for ever: it must be stopped, not waited out.
            tasks.spawn(async move {
                let _ended = ended;
                std::future::pending::<()>().await
            });
        }
        // A task that spawns another while running, as the status controller does.
        let inner = Arc::new(AtomicBool::new(false));
        let (spawner, flag) = (tasks.clone(), inner.clone());
        tasks.spawn(async move {
            let ended = Ended(flag);
            spawner.spawn(async move {
                let _ended = ended;
                std::future::pending::<()>().await
            });
            std::future::pending::<()>().await
        });
        tokio::task::yield_now().await;

        tasks.shut_down().await;
        for flag in flags.iter().chain([&inner]) {
            assert!(flag.load(Ordering::SeqCst));
        }
        assert!(tasks.is_shutting_down());
    }

    #[tokio::test]
    async fn a_task_spawned_after_shutdown_does_not_run() {
        let tasks = Tasks::new();
        tasks.shut_down().await;
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tasks
            .spawn(async move {
                tokio::task::yield_now().await;
                flag.store(true, Ordering::SeqCst);
            })
            .await
            .unwrap();
        assert!(!ran.load(Ordering::SeqCst));
    }
}
