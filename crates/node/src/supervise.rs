//! Supervision: every thread and task the node cannot work without runs
//! under a [`Fatal`] handle. If one panics, returns an error, or ends
//! before the node is stopping, the cause is logged and [`crate::run`]
//! returns it, so the process exits non-zero instead of living on half
//! alive (serving reads, passing probes, but never committing again).
//!
//! **Invariant:** a supervised thread or task that ends while the node is
//! not stopping is a fatal error, whatever the reason.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tracing::error;

/// Why the node must stop: which part failed, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} {how}")]
pub struct FatalError {
    pub part: String,
    pub how: String,
}

/// How long a part that only ended waits for the failure behind it.
pub const CAUSE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl FatalError {
    /// A panic or a failure, rather than a part that ended.
    pub fn is_cause(&self) -> bool {
        self.how.starts_with("panicked") || self.how.starts_with("failed")
    }
}

/// Reports fatal errors to [`crate::run`]. Clones share one channel and
/// one "stopping" flag: after [`Fatal::stopping`], parts that end are not
/// errors.
#[derive(Clone)]
pub struct Fatal {
    sender: mpsc::UnboundedSender<FatalError>,
    stopping: Arc<AtomicBool>,
}

/// The receiving end, held by [`crate::run`].
pub struct FatalReceiver(mpsc::UnboundedReceiver<FatalError>);

impl FatalReceiver {
    /// The first fatal error; pending for ever if there is none.
    /// The cause of the node's stop: the first panic or failure, or, when
    /// a part only ended, that, unless a panic or failure follows within
    /// [`CAUSE_WAIT`]: a part often ends because another failed (a task
    /// whose queue the panicked consensus thread held), and the stop must
    /// name the failure, not its consequence.
    pub async fn first(&mut self) -> FatalError {
        let Some(first) = self.0.recv().await else {
            // Every sender is gone, so nothing can fail any more.
            return std::future::pending().await;
        };
        if first.is_cause() {
            return first;
        }
        let cause = tokio::time::timeout(CAUSE_WAIT, async {
            while let Some(next) = self.0.recv().await {
                if next.is_cause() {
                    return Some(next);
                }
            }
            None
        })
        .await;
        cause.ok().flatten().unwrap_or(first)
    }
}

impl Fatal {
    pub fn new() -> (Self, FatalReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            Self {
                sender,
                stopping: Arc::new(AtomicBool::new(false)),
            },
            FatalReceiver(receiver),
        )
    }

    /// The node is shutting down: parts ending now are expected.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Reports `part` as failed, with the reason, unless the node is
    /// stopping and the part only ended.
    pub fn report(&self, part: &str, how: impl Into<String>) {
        let fatal = FatalError {
            part: part.to_owned(),
            how: how.into(),
        };
        error!(part = %fatal.part, cause = %fatal.how, "fatal: {fatal}; the node stops");
        // The receiver is gone only once `run` returned.
        let _ = self.sender.send(fatal);
    }

    /// What an ended part means: a panic or an error is always fatal; a
    /// normal end only when the node is not stopping.
    fn ended(&self, part: &str, outcome: Outcome) {
        match outcome {
            Outcome::Panicked(message) => self.report(part, format!("panicked: {message}")),
            Outcome::Failed(message) => self.report(part, format!("failed: {message}")),
            Outcome::Returned if !self.is_stopping() => {
                self.report(part, "stopped while the node was running")
            }
            Outcome::Returned | Outcome::Aborted => {}
        }
    }

    /// Runs `body` on a named OS thread under supervision.
    pub fn spawn_thread<F>(
        &self,
        name: &str,
        body: F,
    ) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() -> Result<(), String> + Send + 'static,
    {
        let fatal = self.clone();
        let part = format!("{name} thread");
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let outcome = match std::panic::catch_unwind(AssertUnwindSafe(body)) {
                    Ok(Ok(())) => Outcome::Returned,
                    Ok(Err(message)) => Outcome::Failed(message),
                    Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
                };
                fatal.ended(&part, outcome);
            })
    }

    /// Runs `task` on the tokio runtime under supervision.
    pub fn spawn_task<F>(&self, name: &str, task: F) -> SupervisedTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let fatal = self.clone();
        let part = format!("{name} task");
        let inner = tokio::spawn(task);
        let task = inner.abort_handle();
        let supervisor = tokio::spawn(async move {
            let outcome = match inner.await {
                Ok(()) => Outcome::Returned,
                // Aborted by the node itself (`SupervisedTask::abort`).
                Err(err) if err.is_cancelled() => Outcome::Aborted,
                Err(err) => Outcome::Panicked(match err.try_into_panic() {
                    Ok(payload) => panic_message(payload.as_ref()),
                    Err(err) => err.to_string(),
                }),
            };
            fatal.ended(&part, outcome);
        });
        SupervisedTask { task, supervisor }
    }
}

/// A task under supervision.
pub struct SupervisedTask {
    task: tokio::task::AbortHandle,
    supervisor: tokio::task::JoinHandle<()>,
}

impl SupervisedTask {
    /// Stops the task; its end is then not an error.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits until the task ended and its end was judged.
    pub async fn ended(self) {
        // The supervisor itself neither panics nor is aborted.
        let _ = self.supervisor.await;
    }
}

enum Outcome {
    Returned,
    Aborted,
    Failed(String),
    Panicked(String),
}

/// The text of a panic (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_thread_is_reported_with_its_message() {
        let (fatal, mut receiver) = Fatal::new();
        let handle = fatal
            .spawn_thread("consensus", || {
                panic!("ledger refused committed block 7: disk full")
            })
            .expect("spawn");
        let _ = handle.join();
        let first = receiver.first().await;
        assert_eq!(first.part, "consensus thread");
        assert_eq!(
            first.how,
            "panicked: ledger refused committed block 7: disk full"
        );
    }

    #[tokio::test]
    async fn a_thread_that_returns_is_fatal_only_while_running() {
        let (fatal, mut receiver) = Fatal::new();
        fatal
            .spawn_thread("admission", || Ok(()))
            .expect("spawn")
            .join()
            .expect("join");
        assert_eq!(
            receiver.first().await.how,
            "stopped while the node was running"
        );

        fatal.stopping();
        fatal
            .spawn_thread("admission", || Ok(()))
            .expect("spawn")
            .join()
            .expect("join");
        fatal
            .spawn_thread("sync", || Err("redb: No space left on device".into()))
            .expect("spawn")
            .join()
            .expect("join");
        // The ended thread was not reported; the failed one was, even when
        // stopping.
        assert_eq!(
            receiver.first().await,
            FatalError {
                part: "sync thread".into(),
                how: "failed: redb: No space left on device".into()
            }
        );
    }

    #[tokio::test]
    async fn the_stop_names_the_failure_not_the_part_that_ended_because_of_it() {
        let (fatal, mut receiver) = Fatal::new();
        fatal.spawn_task("batch fetch", async {}).ended().await;
        fatal
            .spawn_thread("consensus", || panic!("ledger refused committed block 6"))
            .expect("spawn")
            .join()
            .ok();
        let cause = receiver.first().await;
        assert_eq!(cause.part, "consensus thread");
        assert!(cause.is_cause());
        // With no failure behind it, an ended part is the cause.
        let (fatal, mut receiver) = Fatal::new();
        fatal.spawn_task("peer tax", async {}).ended().await;
        assert_eq!(receiver.first().await.part, "peer tax task");
    }

    #[tokio::test]
    async fn a_panicking_or_ending_task_is_reported_and_an_aborted_one_is_not() {
        let (fatal, mut receiver) = Fatal::new();
        fatal
            .spawn_task("sync", async { panic!("sync broke") })
            .ended()
            .await;
        assert_eq!(receiver.first().await.how, "panicked: sync broke");
        fatal.spawn_task("peers", async {}).ended().await;
        assert_eq!(
            receiver.first().await.how,
            "stopped while the node was running"
        );
        let ticker = fatal.spawn_task("ticker", std::future::pending());
        ticker.abort();
        ticker.ended().await;
        assert!(
            receiver.0.try_recv().is_err(),
            "an aborted task is no error"
        );
    }
}
