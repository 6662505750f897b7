//! Graceful shutdown (SPEC R3), after mini-redis: one signal that the hub
//! and every connection listen to (the hub closes the connections that said
//! hello, the others close themselves), and a drain guard that every
//! connection holds, so [`crate::run`] returns only once the last connection
//! has said goodbye.

use tokio::sync::{mpsc, watch};

/// Fires once, when the relay begins to shut down.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// True once shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown begins (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means the trigger was dropped, which also means shutdown.
        let _ = self.rx.wait_for(|down| *down).await;
    }
}

/// The relay's side of the signal: fires it, then waits for every
/// [`DrainGuard`] to be dropped.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
    guard_tx: Option<mpsc::Sender<()>>,
    guard_rx: mpsc::Receiver<()>,
}

/// Held by each live connection; shutdown completes when all are dropped.
#[derive(Debug, Clone)]
pub struct DrainGuard {
    _tx: mpsc::Sender<()>,
}

impl Trigger {
    /// A new, unfired signal.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        let (guard_tx, guard_rx) = mpsc::channel(1);
        Trigger {
            tx,
            guard_tx: Some(guard_tx),
            guard_rx,
        }
    }

    /// A listener for connections and tasks.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// A guard for one connection.
    pub fn guard(&self) -> DrainGuard {
        DrainGuard {
            _tx: self
                .guard_tx
                .clone()
                .expect("guards are handed out before drain"),
        }
    }

    /// Fires the signal.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// Fires the signal and waits until every guard is dropped.
    pub async fn drain(mut self) {
        self.fire();
        self.guard_tx = None;
        // `recv` yields `None` once every sender (guard) is gone.
        let _ = self.guard_rx.recv().await;
    }
}

impl Default for Trigger {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drain_waits_for_every_guard() {
        let trigger = Trigger::new();
        let mut listener = trigger.subscribe();
        let guard = trigger.guard();
        assert!(!listener.is_shutdown());

        let conn = tokio::spawn(async move {
            listener.recv().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
            "closed"
        });
        trigger.drain().await;
        assert!(
            conn.is_finished(),
            "drain returned before the guard was dropped"
        );
        assert_eq!(conn.await.unwrap(), "closed");
    }
}
