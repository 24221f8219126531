//! Alerts are delivered at least once. An alert that a sink did not take is kept in
//! `STATE_DIR/alerts.pending` and offered to that sink again on every later run, oldest first,
//! until it goes through. The outage that stops the database often stops the alert's way out
//! too (one VPN to the mailbox host): the streak's warning must not be lost with it, and the
//! recovery notice must not overtake it.
//!
//! Each failed delivery is logged as an ERROR (by [`crate::alert::send_one`]). At
//! most [`KEEP_AT_MOST`] alerts wait; older ones are dropped with an ERROR naming them, so a
//! gateway that alerts every run while its sinks are down cannot grow the file without bound.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alert::AlertSink;
use crate::failures::Alert;

/// The outbox's name inside `STATE_DIR`.
pub(crate) const OUTBOX_FILE: &str = "alerts.pending";

/// The most alerts kept waiting.
pub(crate) const KEEP_AT_MOST: usize = 20;

/// An alert and the sinks that have not taken it yet (by [`AlertSink::sent`]'s text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    alert: Alert,
    sinks: Vec<String>,
}

/// Offers the waiting alerts, then `new`, to every sink that has not taken them, and keeps what
/// is still undelivered for the next run. Never fails: a problem with the outbox is logged.
pub(crate) fn deliver(state_dir: &Path, sinks: &[Arc<dyn AlertSink>], new: Vec<Alert>) {
    let path = state_dir.join(OUTBOX_FILE);
    if sinks.is_empty() {
        for alert in &new {
            tracing::warn!(
                "Alert not sent (set ALERT_COMMAND, ALERT_EMAIL_TO or ALERT_SNS_TOPIC_ARN): {}",
                alert.subject
            );
        }
        return;
    }
    let mut queue = load(&path);
    let waiting = queue.len();
    let names: Vec<String> = sinks.iter().map(|sink| sink.sent()).collect();
    queue.extend(new.into_iter().map(|alert| Pending {
        alert,
        sinks: names.clone(),
    }));
    for (i, pending) in queue.iter_mut().enumerate() {
        if i < waiting {
            tracing::info!(
                "Retrying an alert not delivered before: {}",
                pending.alert.subject
            );
        }
        // A sink that is no longer configured cannot take it; one that is takes it once.
        pending.sinks.retain(|name| names.contains(name));
        for sink in sinks {
            let name = sink.sent();
            if !pending.sinks.contains(&name) {
                continue;
            }
            if crate::alert::send_one(sink.as_ref(), &pending.alert) {
                pending.sinks.retain(|n| *n != name);
            }
        }
    }
    queue.retain(|pending| !pending.sinks.is_empty());
    if queue.len() > KEEP_AT_MOST {
        let dropped: Vec<Pending> = queue.drain(..queue.len() - KEEP_AT_MOST).collect();
        for pending in dropped {
            tracing::error!(
                "Alert dropped after too many undelivered alerts: {}",
                pending.alert.subject
            );
        }
    }
    save(&path, &queue);
}

/// The waiting alerts; an unreadable outbox is logged and counts as empty. It is read as a
/// file relay-sync keeps ([`relay_fs::Kind::OUTBOX`]): a link, a FIFO or another user's file
/// there is refused (and replaced when the queue is saved).
fn load(path: &Path) -> Vec<Pending> {
    match relay_fs::read(relay_fs::Kind::OUTBOX, path) {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(queue) => queue,
            Err(error) => {
                tracing::error!(
                    "{} is not a relay-sync alert outbox ({error}); its alerts are lost",
                    path.display()
                );
                Vec::new()
            }
        },
        Ok(None) => Vec::new(),
        Err(error) => {
            tracing::error!("{error}; the alerts waiting in it are not retried");
            Vec::new()
        }
    }
}

/// Writes the queue (0600), or removes the file when nothing waits.
fn save(path: &PathBuf, queue: &[Pending]) {
    if queue.is_empty() {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::error!("Cannot remove {}: {error}", path.display()),
        }
        return;
    }
    let result = serde_json::to_vec_pretty(queue)
        .map_err(|error| error.to_string())
        .and_then(|bytes| {
            relay_fs::replace(path, &bytes, 0o600).map_err(|error| error.to_string())
        });
    if let Err(error) = result {
        tracing::error!("Undelivered alerts not kept for the next run: {error}; they are lost");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::failures::Severity;

    /// A sink that records what it took, and refuses everything while `down`.
    #[derive(Debug, Clone)]
    struct Recording {
        name: &'static str,
        down: Arc<AtomicBool>,
        taken: Arc<Mutex<Vec<String>>>,
    }

    impl Recording {
        fn new(name: &'static str) -> Recording {
            Recording {
                name,
                down: Arc::new(AtomicBool::new(false)),
                taken: Arc::new(Mutex::new(Vec::new())),
            }
        }

        fn taken(&self) -> Vec<String> {
            self.taken.lock().unwrap().clone()
        }
    }

    impl AlertSink for Recording {
        fn sent(&self) -> String {
            format!("Alert sent via {}", self.name)
        }

        fn failed(&self) -> String {
            format!("Alert via {} failed", self.name)
        }

        fn send(&self, alert: &Alert) -> Result<(), String> {
            if self.down.load(Ordering::Relaxed) {
                return Err("connection refused".to_owned());
            }
            self.taken.lock().unwrap().push(alert.subject.clone());
            Ok(())
        }
    }

    fn alert(severity: Severity, subject: &str) -> Alert {
        Alert {
            severity,
            subject: subject.to_owned(),
            body: format!("{subject}\nsecond line\n"),
        }
    }

    #[test]
    fn an_undelivered_alert_is_retried_until_it_goes_through_and_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let mail = Recording::new("mail");
        let command = Recording::new("command");
        let sinks: Vec<Arc<dyn AlertSink>> =
            vec![Arc::new(command.clone()), Arc::new(mail.clone())];
        mail.down.store(true, Ordering::Relaxed);

        deliver(
            dir.path(),
            &sinks,
            vec![alert(Severity::Warning, "5 failed")],
        );
        assert_eq!(command.taken(), ["5 failed"]);
        assert!(mail.taken().is_empty());
        // A run with nothing new still retries, and the sink that took it is not asked again.
        deliver(dir.path(), &sinks, Vec::new());
        assert_eq!(command.taken(), ["5 failed"]);
        assert!(dir.path().join(OUTBOX_FILE).exists());

        mail.down.store(false, Ordering::Relaxed);
        deliver(
            dir.path(),
            &sinks,
            vec![alert(Severity::Recovery, "recovered")],
        );
        assert_eq!(mail.taken(), ["5 failed", "recovered"]);
        assert_eq!(command.taken(), ["5 failed", "recovered"]);
        assert!(!dir.path().join(OUTBOX_FILE).exists());
    }

    #[test]
    fn the_outbox_is_bounded_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mail = Recording::new("mail");
        let sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(mail.clone())];
        mail.down.store(true, Ordering::Relaxed);
        for i in 0..KEEP_AT_MOST + 5 {
            deliver(
                dir.path(),
                &sinks,
                vec![alert(Severity::Critical, &format!("critical {i}"))],
            );
        }
        mail.down.store(false, Ordering::Relaxed);
        deliver(dir.path(), &sinks, Vec::new());
        let taken = mail.taken();
        assert_eq!(taken.len(), KEEP_AT_MOST);
        assert_eq!(taken[0], "critical 5");
    }

    #[test]
    fn a_sink_no_longer_configured_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let old = Recording::new("old");
        old.down.store(true, Ordering::Relaxed);
        let sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(old)];
        deliver(dir.path(), &sinks, vec![alert(Severity::Warning, "w")]);
        assert!(dir.path().join(OUTBOX_FILE).exists());
        let new = Recording::new("new");
        let sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(new.clone())];
        deliver(dir.path(), &sinks, Vec::new());
        assert!(new.taken().is_empty());
        assert!(!dir.path().join(OUTBOX_FILE).exists());
    }
}
