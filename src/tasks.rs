//! Background tasks with an owner: every task a process starts (the worker's loops, the
//! sealer, checkpoints, the purge) is spawned on one [`Tasks`], which cancels them together
//! and waits for them to end on shutdown, so none outlives the process's orderly stop. A pass
//! of a task that panics is caught and counted ([`survive`]); the task goes on.
//! [`on_cores_in_order`] runs CPU-bound work over a stream on the blocking threads.
//! Imports nothing from the rest of the crate.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The owner of a process's background tasks.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when [`Tasks::shutdown`] starts: a task stops at its next wait.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` until it ends; [`Tasks::shutdown`] waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Runs `pass` every `every` (the first time at once) until shutdown. A pass that fails
    /// or panics is logged (and a panic counted), and the next one runs on time; a pass in
    /// flight at shutdown is finished, not cut short.
    pub fn every<F, Fut>(&self, name: &'static str, every: Duration, mut pass: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send,
    {
        let stop = self.stop.clone();
        self.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                if let Err(e) = survive(name, pass()).await {
                    tracing::warn!(task = name, error = format!("{e:#}"), "a background pass failed");
                }
            }
        });
    }

    /// How many tasks have not ended yet.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels every task and waits until all have ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Runs one pass of the loop `name`; a pass that panics becomes a failed pass (logged and
/// counted in `gsb_worker_panics_total`), so the loop goes on instead of stopping for good.
pub async fn survive<T, F>(name: &'static str, pass: F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    match AssertUnwindSafe(pass).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".to_owned());
            metrics::counter!("gsb_worker_panics_total", "loop" => name).increment(1);
            tracing::error!(worker.loop = name, panic = %message, "a background pass panicked; the loop goes on");
            Err(anyhow::anyhow!("the {name} pass panicked: {message}"))
        }
    }
}

/// `work` on each item of `items` (with its index), on the blocking threads, as many items at
/// once as there are cores, the results in the items' order; an error item passes through.
/// CPU-bound work on what a stream reads (digesting events, encoding them) then overlaps
/// with reading the next items, and memory holds a few items.
pub fn on_cores_in_order<T, U, E, W>(
    items: impl Stream<Item = Result<T, E>> + Send + 'static,
    work: W,
) -> impl Stream<Item = Result<U, E>> + Send + 'static
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    W: Fn(usize, T) -> U + Clone + Send + Sync + 'static,
{
    let at_once = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    items
        .enumerate()
        .map(move |(i, item)| {
            let work = work.clone();
            async move {
                let item = item?;
                Ok(tokio::task::spawn_blocking(move || work(i, item))
                    .await
                    .expect("work on the blocking threads does not panic"))
            }
        })
        .buffered(at_once)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_on_the_cores_comes_back_in_order_and_errors_pass_through() {
        let items = futures_util::stream::iter((0..40u64).map(|n| if n == 30 { Err(n) } else { Ok(n) }));
        // Earlier items take longer, so they finish after later ones.
        let out: Vec<Result<(usize, u64), u64>> = on_cores_in_order(items, |i, n| {
            std::thread::sleep(Duration::from_millis(40 - n));
            (i, n * 2)
        })
        .collect()
        .await;
        let expected: Vec<Result<(usize, u64), u64>> = (0..40u64)
            .map(|n| if n == 30 { Err(n) } else { Ok((n as usize, n * 2)) })
            .collect();
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn a_pass_that_panics_is_a_failed_pass_and_the_loop_goes_on() {
        let mut outcomes = Vec::new();
        for round in 0..3 {
            let pass = survive("jobs", async move {
                if round == 1 {
                    panic!("a bad row");
                }
                Ok(round)
            });
            outcomes.push(pass.await.map_err(|e| e.to_string()));
        }
        assert_eq!(outcomes[0], Ok(0));
        assert_eq!(outcomes[1], Err("the jobs pass panicked: a bad row".to_owned()));
        assert_eq!(outcomes[2], Ok(2), "the pass after the panic runs");
    }

    #[tokio::test]
    async fn a_panic_in_a_pass_is_counted() {
        let handle = crate::telemetry::metrics_handle();
        let pass = survive::<(), _>("sweeper", async { panic!("{}", String::from("formatted")) });
        let error = pass.await.unwrap_err().to_string();
        assert_eq!(error, "the sweeper pass panicked: formatted");
        let rendered = handle.render();
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with("gsb_worker_panics_total{loop=\"sweeper\"}")),
            "{rendered}"
        );
    }

    #[tokio::test]
    async fn a_periodic_task_survives_its_panics_and_stops_at_shutdown() {
        let tasks = Tasks::new();
        let passes = Arc::new(AtomicUsize::new(0));
        let counted = passes.clone();
        tasks.every("test", Duration::from_millis(5), move || {
            let pass = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if pass == 0 {
                    panic!("the first pass");
                }
                Ok(())
            }
        });
        let alive = Arc::new(());
        let held = alive.clone();
        let stopping = tasks.stopping();
        tasks.spawn(async move {
            let _held = held;
            stopping.cancelled().await;
        });
        while passes.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::timeout(Duration::from_secs(5), tasks.shutdown())
            .await
            .expect("every task ends at shutdown");
        assert_eq!(Arc::strong_count(&alive), 1, "a task outlived the shutdown");
        assert_eq!(tasks.running(), 0);
        let after = passes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(passes.load(Ordering::SeqCst), after, "no pass runs after shutdown");
    }
}
