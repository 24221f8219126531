//! Operating a relay-sync gateway, as a library: what `relay-sync` does, for a Rust admin tool
//! to embed.
//!
//! [`Gateway`] is the facade. It holds a typed [`Config`] and runs what an operator runs: a
//! [`sync`](Gateway::sync) (under the run lock, with the preflight around the engine, and the
//! run recorded in `STATE_DIR`, alerts and metrics), a [`dry_run`](Gateway::dry_run),
//! [`status`](Gateway::status), [`check`](Gateway::check), [`backups`](Gateway::backups) and
//! [`rollback`](Gateway::rollback).
//!
//! Each operation exists twice: `*_blocking`, which does the work on the calling thread (it runs
//! Postfix commands, reads and writes files, and queries the database on a small runtime of its
//! own), and an `async` one that moves the blocking one onto tokio's blocking pool. From async
//! code use the `async` ones: they never block an executor thread and never start a runtime
//! inside the caller's. The `async` ones need a tokio runtime (any flavour); the `*_blocking`
//! ones must not be called from an async task.
//!
//! ```no_run
//! # async fn admin_panel_saved_a_domain() -> Result<(), relay_ops::ConfigError> {
//! use relay_ops::{Config, Gateway, SyncOptions};
//! let config = Config::load(Some("/opt/mailserver/config/relay-sync.conf".as_ref()), std::env::vars_os())?;
//! let gateway = Gateway::new(config);
//! let record = gateway.sync(SyncOptions::default()).await;
//! println!("sync ended with exit code {}: {}", record.exit_code(), record.outcome);
//! let status = gateway.status().await;
//! println!("{} managed domains", status.managed_domains.len());
//! # Ok(())
//! # }
//! ```
//!
//! Architecture invariant: relay-ops is the only crate that knows the file layout of a gateway
//! (state, lock, backups, metrics, the config file); it decides nothing about what a sync
//! writes (relay-core plans, relay-engine orders and applies). It has no command-line parsing
//! and prints nothing: results are data, rendered by the caller.
#![warn(clippy::print_stdout, clippy::print_stderr)]
// Unit tests set files up by path in temporary directories of their own.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod alert;
#[cfg(feature = "aws")]
mod aws;
pub mod check;
pub mod config;
mod exit;
mod failures;
mod hold;
mod journal;
pub mod json;
mod json_schema;
mod lock;
mod login;
pub mod manual;
mod metrics;
#[cfg(test)]
mod module_graph;
#[cfg(test)]
mod monitoring;
mod outbox;
mod password;
pub mod rollback;
mod state_dir;
pub mod status;
mod sync;
pub mod watch;

use std::sync::Arc;

/// Alerts to Amazon SNS: the sink, and how it shapes what it publishes.
#[cfg(feature = "aws")]
pub use alert::sns;
pub use alert::{AlertSink, CommandSink, MailSink};
pub use check::Report as CheckReport;
pub use config::{Config, ConfigError};
pub use exit::ExitStatus;
pub use failures::{Alert, RunState, Severity};
pub use hold::{Hold, HoldError};
pub use lock::Held;
pub use login::DbLogin;
pub use manual::exit_code_table;
pub use rollback::RollbackError;
pub use status::{Health, Status};
pub use sync::{DryRun, NotReady, RunOutcome, RunRecord, SyncOptions};
pub use watch::{Watch, WatchEnd, WatchHandle, WatchStatus};

/// A gateway to operate: its config, where its alerts go, and the database login read from
/// `DB_PASSWORD_SECRET`, kept between syncs until MariaDB refuses it (a rotation).
///
/// Cheap to clone (the config is shared, and so is the kept login), and `Send + Sync`: an
/// admin tool can keep one and use it from any task.
#[derive(Debug, Clone)]
pub struct Gateway {
    config: Arc<Config>,
    sinks: Vec<Arc<dyn AlertSink>>,
    logins: Arc<password::Logins>,
}

impl Gateway {
    /// A gateway with the alert sinks its config names (`ALERT_COMMAND`, `ALERT_EMAIL_TO`).
    pub fn new(config: Config) -> Gateway {
        let sinks = alert::sinks_from_config(&config, &host_name());
        Gateway {
            config: Arc::new(config),
            sinks,
            logins: Arc::default(),
        }
    }

    /// The same gateway with alerts also delivered to `sink` (an admin tool's own channel).
    /// Sinks added before are kept.
    pub fn with_alert_sink(mut self, sink: impl AlertSink + 'static) -> Gateway {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One sync (SPEC §2), under the run lock, recorded in `STATE_DIR`, alerts and metrics.
    /// Another run holding the lock gives [`RunOutcome::Skipped`] at once.
    pub fn sync_blocking(&self, options: SyncOptions) -> RunRecord {
        sync::sync(&self.config, &self.logins, &self.sinks, options)
    }

    /// [`Gateway::sync_blocking`] on tokio's blocking pool.
    pub async fn sync(&self, options: SyncOptions) -> RunRecord {
        let gateway = self.clone();
        off_the_executor(move || gateway.sync_blocking(options)).await
    }

    /// Plans a sync and changes nothing: no lock, no state, no file written.
    pub fn dry_run_blocking(&self) -> DryRun {
        sync::dry_run(&self.config, &self.logins)
    }

    /// [`Gateway::dry_run_blocking`] on tokio's blocking pool.
    pub async fn dry_run(&self) -> DryRun {
        let gateway = self.clone();
        off_the_executor(move || gateway.dry_run_blocking()).await
    }

    /// The state at a glance, from files only: it answers when the database and Postfix are
    /// down, and never holds a secret.
    pub fn status_blocking(&self) -> Status {
        status::read(&self.config)
    }

    /// [`Gateway::status_blocking`] on tokio's blocking pool.
    pub async fn status(&self) -> Status {
        let gateway = self.clone();
        off_the_executor(move || gateway.status_blocking()).await
    }

    /// Whether this host is ready to sync (SPEC §9). Changes nothing.
    pub fn check_blocking(&self) -> CheckReport {
        check::run(&self.config)
    }

    /// [`Gateway::check_blocking`] on tokio's blocking pool.
    pub async fn check(&self) -> CheckReport {
        let gateway = self.clone();
        off_the_executor(move || gateway.check_blocking()).await
    }

    /// The backup generations, oldest first.
    pub fn backups_blocking(&self) -> Result<Vec<rollback::Generation>, RollbackError> {
        rollback::generations(&self.config)
    }

    /// [`Gateway::backups_blocking`] on tokio's blocking pool.
    pub async fn backups(&self) -> Result<Vec<rollback::Generation>, RollbackError> {
        let gateway = self.clone();
        off_the_executor(move || gateway.backups_blocking()).await
    }

    /// Restores the generation `to` (the newest when `None`) under the run lock, after saving
    /// the current state as a generation of its own. With `hold`, syncs are then held with
    /// that reason before the lock is let go, so no sync applies the database in between. A
    /// generation holding what a sync never writes, or one relay-sync cannot vouch for, is
    /// restored only with `force` ([`RollbackError::NeedsForce`]).
    pub fn rollback_blocking(
        &self,
        to: Option<&str>,
        hold: Option<&str>,
        force: bool,
    ) -> Result<rollback::RolledBack, RollbackError> {
        rollback::rollback(&self.config, to, hold, force)
    }

    /// [`Gateway::rollback_blocking`] on tokio's blocking pool.
    pub async fn rollback(
        &self,
        to: Option<String>,
        hold: Option<String>,
        force: bool,
    ) -> Result<rollback::RolledBack, RollbackError> {
        let gateway = self.clone();
        off_the_executor(move || gateway.rollback_blocking(to.as_deref(), hold.as_deref(), force))
            .await
    }

    /// What a rollback to `to` (the newest when `None`) would restore, and what in it needs
    /// `force` (`rollback --dry-run`). Changes nothing.
    pub fn rollback_preview_blocking(
        &self,
        to: Option<&str>,
        force: bool,
    ) -> Result<rollback::RollbackPreview, RollbackError> {
        rollback::preview(&self.config, to, force)
    }

    /// Holds syncs (`relay-sync hold`): until [`Gateway::release_blocking`], a sync changes
    /// nothing and says why.
    pub fn hold_blocking(&self, reason: &str) -> Result<Hold, HoldError> {
        hold::place(&self.config.state_dir, reason)
    }

    /// Lifts the hold; the one lifted, or `None` when there was none.
    pub fn release_blocking(&self) -> Result<Option<Hold>, HoldError> {
        hold::release(&self.config.state_dir)
    }
}

impl Gateway {
    /// Starts watch mode on the current tokio runtime: a sync now, then one whenever the
    /// domains in the database change (polled every `POLL_INTERVAL`), and a full sync at least
    /// every `RECONCILE_INTERVAL`, until `shutdown` completes. A sync in progress then ends
    /// (each of its commands is bounded by `COMMAND_TIMEOUT`, a failed step is rolled back)
    /// before [`Watch::finished`] returns. See [`watch`] for the rules.
    ///
    /// Must be called from within a tokio runtime (any flavour, with time enabled); the syncs
    /// run on its blocking pool.
    ///
    /// ```no_run
    /// # async fn admin_tool(gateway: relay_ops::Gateway) {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let watch = gateway.watch(async move { let _ = stopped.await; });
    /// let handle = watch.handle();
    /// // After the admin saved a domain:
    /// handle.sync_now();
    /// // At exit:
    /// let _ = stop.send(());
    /// let end = watch.finished().await;
    /// # }
    /// ```
    pub fn watch(&self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Watch {
        watch::start(self.clone(), shutdown)
    }
}

/// Runs `work` on tokio's blocking pool. A panic in it is resumed in the caller, as if the work
/// had run in place.
async fn off_the_executor<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only a runtime that is shutting down cancels a blocking task before it starts, and
        // then nothing is left to poll this future.
        Err(error) => panic!("relay-ops work was cancelled: {error}"),
    }
}

/// This machine's name, for alert subjects and the default sender.
// The kernel's own file in procfs, which no user can plant anything at.
#[allow(clippy::disallowed_methods)]
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Nowhere;

    impl AlertSink for Nowhere {
        fn sent(&self) -> String {
            "sent nowhere".to_owned()
        }

        fn failed(&self) -> String {
            "failed nowhere".to_owned()
        }

        fn send(&self, _: &Alert) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn every_added_alert_sink_is_kept_beside_the_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.conf");
        std::fs::write(
            &path,
            "DB_HOST=127.0.0.1\nDELL_RELAY_IP=127.0.0.1\nALERT_COMMAND=true\n",
        )
        .unwrap();
        let env: [(&str, &str); 0] = [];
        let gateway = Gateway::new(Config::load(Some(&path), env).unwrap())
            .with_alert_sink(Nowhere)
            .with_alert_sink(Nowhere);
        let names: Vec<String> = gateway.sinks.iter().map(|sink| sink.sent()).collect();
        assert_eq!(
            names,
            [
                "Alert sent via ALERT_COMMAND",
                "sent nowhere",
                "sent nowhere"
            ]
        );
    }
}
