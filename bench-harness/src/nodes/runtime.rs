//! [`NodeRuntime`]: the harness's own client, running inside a node's network namespace. A
//! thread enters the namespace (`setns` changes only that thread) and drives a current-thread
//! tokio runtime; every future spawned on it runs on that thread, so every socket it opens
//! (the pull's connections, their pool) belongs to the node and crosses the node's shaped link.
//! Threads the runtime starts for blocking work are created by that thread and inherit its
//! namespace.
//!
//! This file moves futures onto the node; what they do (the pull) is `pull.rs`'s.

use std::future::Future;
use std::thread::JoinHandle;

use stampede_lab::{Endpoint, LabError};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A runtime on a thread inside one node's namespace; stopped on drop.
#[derive(Debug)]
pub struct NodeRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeRuntime {
    /// Starts the thread inside `node`'s namespace and its runtime.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the namespace cannot be entered or the runtime not built.
    pub fn start(node: &Endpoint) -> Result<Self, LabError> {
        let netns = node.netns().to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("node-{}", node.netns()))
            .spawn(move || {
                // This thread is the node's for its whole life.
                let entered = stampede_lab::namespace::enter(&netns).map_err(std::io::Error::other);
                let runtime = entered.and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                match runtime {
                    Err(e) => {
                        ready_tx.send(Err(e)).ok();
                    }
                    Ok(rt) => {
                        ready_tx.send(Ok(rt.handle().clone())).ok();
                        // Until stopped (or the sender is dropped); spawned tasks run meanwhile.
                        rt.block_on(async {
                            stop_rx.await.ok();
                        });
                    }
                }
            })
            .map_err(|source| LabError::Socket {
                what: format!("start a thread for namespace {}", node.netns()),
                source,
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the node thread ended before its runtime ran"))
            .and_then(|r| r)
            .map_err(|source| LabError::Socket {
                what: format!("run a runtime inside namespace {}", node.netns()),
                source,
            })?;
        Ok(Self {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Runs `future` on the node and waits for its output.
    ///
    /// # Panics
    /// When the future panics (the panic is carried over) or the runtime was stopped.
    pub async fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle.spawn(future).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the node's runtime stopped under a running pull: {e}"),
        }
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        // Dropping the sender ends the runtime's wait.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}
