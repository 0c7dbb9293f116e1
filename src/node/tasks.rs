//! [`TaskSet`]: background work a component owns and stops together.

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Background work a component owns: every task in one `JoinSet`, stopped together by
/// a cancellation token ([`TaskSet::shutdown`]) or when the set is dropped.
#[derive(Debug, Default)]
pub struct TaskSet {
    tasks: std::sync::Mutex<JoinSet<()>>,
    cancel: CancellationToken,
}

impl TaskSet {
    /// An empty set whose tasks stop when `cancel` is cancelled (or at
    /// [`TaskSet::shutdown`]).
    pub fn new(cancel: CancellationToken) -> Self {
        TaskSet {
            tasks: std::sync::Mutex::default(),
            cancel,
        }
    }

    /// Runs `task` until it ends or the set shuts down. Needs a tokio runtime.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while tasks.try_join_next().is_some() {}
        if cancel.is_cancelled() {
            return;
        }
        tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// The token the set's tasks stop on.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Stops every task and waits until they have ended.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        while tasks.join_next().await.is_some() {}
    }
}
