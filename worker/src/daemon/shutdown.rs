//! How the daemon stops. A first stop (SIGTERM, SIGINT) ends leasing, finishes and reports the
//! batch in flight, then returns; a second gives that batch back to the queue at once (its
//! leases released, no attempt charged) and returns; a third (signals only) exits the process
//! at once: what is not reported yet is in the spool or expires with its lease.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::error::{DaemonError, Result};

/// How far a shutdown has gone: 0 running, 1 draining (first stop), 2 releasing (second).
#[derive(Debug, Default)]
pub struct Stop {
    level: AtomicU8,
    changed: Notify,
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    /// One step further (what a signal does); returns the new level.
    pub fn escalate(&self) -> u8 {
        let level = self.level.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        self.changed.notify_waiters();
        level
    }

    pub fn level(&self) -> u8 {
        self.level.load(Ordering::SeqCst)
    }

    /// Resolves once the level reaches `level`.
    pub async fn reached(&self, level: u8) {
        loop {
            let notified = self.changed.notified();
            if self.level() >= level {
                return;
            }
            notified.await;
        }
    }

    /// Escalates on every SIGTERM or SIGINT, and exits the process on the third (for the
    /// binary; tests call [`Stop::escalate`]).
    pub fn on_signals(self: &Arc<Self>) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let watch = |kind, name: &str| {
            signal(kind).map_err(|e| DaemonError::Config(format!("cannot watch {name}: {e}")))
        };
        let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
        let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
        let stop = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                match stop.escalate() {
                    1 => tracing::info!("signal: finishing the batch in flight, then exiting (signal again to release it now)"),
                    2 => tracing::info!("second signal: releasing the batch in flight (a third exits at once)"),
                    _ => {
                        // what is not reported yet is in the spool or expires with its lease
                        tracing::warn!("third signal: exiting now");
                        std::process::exit(130);
                    }
                }
            }
        });
        Ok(())
    }
}
