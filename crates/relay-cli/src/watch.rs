//! `relay-sync watch`: runs relay-ops' watcher until SIGTERM or SIGINT, and maps the other
//! signals and systemd's notify protocol onto it.
//!
//! - `SIGTERM`, `SIGINT`: the sync in progress ends (each command bounded by
//!   `COMMAND_TIMEOUT`, a failed step rolled back), then exit 0.
//! - `SIGHUP`: the config file is read again; an invalid one is logged as ERROR and the one in
//!   use is kept. A new `LOG_FILE` path takes effect at once (a change to or from `-`, standard
//!   output, at the next start).
//! - `SIGUSR1`: sync now (`systemctl kill -s USR1 relay-sync-watch` from the panel's hook).
//! - Under systemd (`Type=notify`): `READY=1` after the first sync, `WATCHDOG=1` and `STATUS=`
//!   (the last result) after every sync and at most every 5 s between them. Outside systemd
//!   the notifications are no-ops.

use std::path::PathBuf;

use relay_ops::{Config, Gateway, WatchEnd, WatchStatus};

use crate::logging::{self, Switched};
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    /// No tokio runtime.
    #[error("cannot start the async runtime for the watcher: {0}")]
    Runtime(std::io::Error),
    /// The signals it stops and reloads on cannot be caught.
    #[error("cannot install the signal handlers of the watcher: {0}")]
    Signals(std::io::Error),
}

/// Runs the watcher; returns how it ended once it has stopped.
pub(crate) fn run(gateway: Gateway, config_path: Option<PathBuf>) -> Result<WatchEnd, WatchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WatchError::Runtime)?
        .block_on(watch(gateway, config_path))
}

async fn watch(gateway: Gateway, config_path: Option<PathBuf>) -> Result<WatchEnd, WatchError> {
    // Installed before the watcher starts, so no signal meets the default action (exit) while
    // a sync runs.
    let signals = (|| {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::user_defined1())?,
        ))
    })();
    let (mut term, mut int, mut hup, mut usr1) = signals.map_err(WatchError::Signals)?;
    let mut log_file = gateway.config().log_file.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = gateway.watch(async move {
        let _ = stopped.await;
    });
    let handle = watch.handle();
    let mut status = handle.subscribe();
    let mut notified = Notified::default();
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received: stopping after the step in progress");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received: stopping after the step in progress");
                break;
            }
            _ = hup.recv() => match Config::load(config_path.as_deref(), std::env::vars_os()) {
                Ok(config) => {
                    tracing::info!("SIGHUP received: configuration read again");
                    follow_log_file(&mut log_file, &config.log_file);
                    handle.reconfigure(Gateway::new(config));
                }
                Err(error) => tracing::error!(
                    "SIGHUP received but the configuration is invalid, keeping the one in use: \
                     {error}"
                ),
            },
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1 received: syncing now");
                handle.sync_now();
            }
            changed = status.changed() => {
                if changed.is_err() {
                    // The watcher ended on its own (it never does without a stop).
                    break;
                }
                let now = status.borrow_and_update().clone();
                notify_systemd(&now, &mut notified);
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    let _ = stop.send(());
    let end = watch.finished().await;
    tracing::info!(
        "Watcher stopped after {} poll(s) and {} sync(s)",
        end.status.polls,
        end.status.syncs
    );
    Ok(end)
}

/// Moves the log lines to `new` when a reloaded config names another `LOG_FILE` than `current`
/// (which follows it). A change to or from `-` waits for the next start: the lines' other
/// destinations (stderr, the journal) are chosen once, at start-up.
fn follow_log_file(current: &mut std::path::PathBuf, new: &std::path::Path) {
    if current.as_path() == new {
        return;
    }
    let stdout = |path: &std::path::Path| path.as_os_str() == "-";
    if stdout(current) || stdout(new) {
        tracing::warn!(
            "LOG_FILE changed from {} to {}: a change to or from - (standard output) takes \
             effect when relay-sync watch restarts",
            current.display(),
            new.display()
        );
        return;
    }
    tracing::info!("LOG_FILE changed: the next lines go to {}", new.display());
    match logging::switch_log_file(new) {
        Ok(Switched::Moved) => {
            tracing::info!("Log moved here from {}", current.display());
            *current = new.to_owned();
        }
        Ok(Switched::Same | Switched::NotAFile) => *current = new.to_owned(),
        Err(error) => tracing::error!(
            "{error}; log lines keep going to {} (LOG_FILE as it was)",
            current.display()
        ),
    }
}

/// What systemd was last told.
#[derive(Debug, Default)]
struct Notified {
    ready: bool,
    /// When, and the sync count and exit code then.
    last: Option<(std::time::Instant, u64, Option<u8>)>,
}

/// The longest systemd waits between two notifications while nothing but polls happens: each
/// is a message PID 1 handles, and a poll every fraction of a second should not be one.
const NOTIFY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// `READY=1` once, after the first sync; `WATCHDOG=1` and `STATUS=` after every sync, and
/// between syncs at most every [`NOTIFY_EVERY`] (far more often than `WatchdogSec`).
fn notify_systemd(status: &WatchStatus, notified: &mut Notified) {
    let line = match status.last_exit {
        Some(exit) => format!(
            "exit {exit}: {}; {} poll(s), {} change(s), {} sync(s)",
            status.last_result, status.polls, status.changes, status.syncs
        ),
        None => "starting".to_owned(),
    };
    // systemd shows STATUS= on one line and keeps it short.
    let line: String = line.chars().filter(|c| !c.is_control()).take(400).collect();
    if status.ready && !notified.ready {
        notified.ready = true;
        notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    } else {
        let news = notified.last.is_none_or(|(at, syncs, exit)| {
            syncs != status.syncs || exit != status.last_exit || at.elapsed() >= NOTIFY_EVERY
        });
        if !news {
            return;
        }
        notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
    }
    notified.last = Some((std::time::Instant::now(), status.syncs, status.last_exit));
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {error}");
    }
}
