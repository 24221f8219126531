//! "A reload is pending": `STATE_DIR/reload.pending` exists from the first change to what
//! Postfix relays until `postfix reload` has succeeded.
//!
//! A run killed between `postconf -e` and the reload leaves main.cf and the maps converged
//! while Postfix's running processes still use the old `relay_domains`. The next run would find
//! nothing to write and never reload. With the marker it knows, and reloads (and verifies)
//! even when the files already match ([`relay_engine::SyncSettings::reload_pending`]).
//!
//! [`Journaled`] keeps the marker without the engine knowing: it wraps the Postfix adapter,
//! writes the marker before each call that changes what Postfix relays (`relay_domains`, or map
//! mode's table), and removes it when a reload succeeds (the run's own, or its rollback's).
//! Transport writes do not mark: they change routes, which Postfix looks up per message, and
//! the apply order already puts the route removals after the reload (with a pending reload
//! done first, see [`relay_engine::Prepared::steps`]). So a run that only writes the final
//! transport (after a run killed past its reload) leaves no marker and reloads nothing. A
//! marker that cannot be written fails that write, so the run is rolled back rather than left
//! unrecorded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use relay_postfix::{Backup, PostfixError, PostfixRead, PostfixWrite};

/// The marker's name inside `STATE_DIR`.
pub(crate) const RELOAD_PENDING: &str = "reload.pending";

/// Whether an earlier run left a reload to do. The marker is a file relay-sync keeps
/// ([`relay_fs::Kind::JOURNAL`]): anything else at its name is refused.
pub(crate) fn is_pending(state_dir: &Path) -> Result<bool, relay_fs::FsError> {
    Ok(relay_fs::inspect(relay_fs::Kind::JOURNAL, &state_dir.join(RELOAD_PENDING))?.is_some())
}

/// A Postfix adapter that keeps the reload-pending marker (see the module documentation).
#[derive(Debug)]
pub(crate) struct Journaled<P> {
    inner: P,
    marker: PathBuf,
    state_dir: PathBuf,
    marked: AtomicBool,
}

impl<P> Journaled<P> {
    /// Wraps `inner`, keeping the marker in `state_dir`.
    pub(crate) fn new(inner: P, state_dir: &Path) -> Journaled<P> {
        Journaled {
            inner,
            marker: state_dir.join(RELOAD_PENDING),
            state_dir: state_dir.to_owned(),
            marked: AtomicBool::new(false),
        }
    }

    /// Writes the marker before a change, unless it is there already.
    fn mark(&self) -> Result<(), PostfixError> {
        if self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        relay_fs::create_dir(&self.state_dir, 0o700)?;
        let text = format!(
            "a run (pid {}) changed Postfix's files at {} and has not reloaded it yet\n",
            std::process::id(),
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
        );
        relay_fs::replace(&self.marker, text.as_bytes(), 0o600)?;
        self.marked.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes the marker after a successful reload.
    fn clear(&self) {
        self.marked.store(false, Ordering::Release);
        match std::fs::remove_file(&self.marker) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            // The next run reloads once more than needed: harmless, but say so.
            Err(error) => tracing::warn!(
                "Cannot remove {}: {error}; the next run reloads Postfix again",
                self.marker.display()
            ),
        }
    }
}

impl<P: PostfixRead> PostfixRead for Journaled<P> {
    fn shell_command(&self, program: &str, args: &[&str]) -> String {
        self.inner.shell_command(program, args)
    }

    fn relay_domains(&self) -> Result<String, PostfixError> {
        self.inner.relay_domains()
    }

    fn read_transport(&self) -> Result<Option<String>, PostfixError> {
        self.inner.read_transport()
    }

    fn transport_map_is_fresh(&self) -> Result<bool, PostfixError> {
        self.inner.transport_map_is_fresh()
    }

    fn lookup_transport(&self, key: &str) -> Result<Option<String>, PostfixError> {
        self.inner.lookup_transport(key)
    }

    fn lookup_transports(&self, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError> {
        self.inner.lookup_transports(keys)
    }

    fn transport_map_name(&self) -> String {
        self.inner.transport_map_name()
    }

    fn relay_domains_table(&self) -> (String, PathBuf) {
        self.inner.relay_domains_table()
    }

    fn read_relay_domains_map(&self) -> Result<Option<String>, PostfixError> {
        self.inner.read_relay_domains_map()
    }

    fn relay_domains_map_is_fresh(&self) -> Result<bool, PostfixError> {
        self.inner.relay_domains_map_is_fresh()
    }

    fn relay_recipient_maps(&self) -> Result<String, PostfixError> {
        self.inner.relay_recipient_maps()
    }

    fn recipients_table(&self) -> (String, PathBuf) {
        self.inner.recipients_table()
    }

    fn read_recipients_map(&self) -> Result<Option<String>, PostfixError> {
        self.inner.read_recipients_map()
    }

    fn recipients_map_header(&self) -> Option<String> {
        self.inner.recipients_map_header()
    }

    fn recipients_map_is_fresh(&self) -> Result<bool, PostfixError> {
        self.inner.recipients_map_is_fresh()
    }

    fn lookup_recipients(&self, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError> {
        self.inner.lookup_recipients(keys)
    }
}

impl<P: PostfixWrite> PostfixWrite for Journaled<P> {
    fn backup(&self, relay_domains: &str, transport: Option<&str>) -> Result<Backup, PostfixError> {
        self.inner.backup(relay_domains, transport)
    }

    fn write_transport(&self, text: &str) -> Result<(), PostfixError> {
        self.inner.write_transport(text)
    }

    fn rebuild_transport_map(&self) -> Result<(), PostfixError> {
        self.inner.rebuild_transport_map()
    }

    fn write_relay_domains_map(&self, text: &str) -> Result<(), PostfixError> {
        self.mark()?;
        self.inner.write_relay_domains_map(text)
    }

    fn prepare_maps(
        &self,
        transport: Option<&str>,
        relay_domains_map: Option<&str>,
        recipients_map: Option<&str>,
    ) {
        self.inner
            .prepare_maps(transport, relay_domains_map, recipients_map);
    }

    fn discard_prepared(&self) {
        self.inner.discard_prepared();
    }

    fn backup_relay_domains_map(&self, stamp: &str, text: &str) -> Result<PathBuf, PostfixError> {
        self.inner.backup_relay_domains_map(stamp, text)
    }

    fn set_relay_domains(&self, value: &str) -> Result<(), PostfixError> {
        self.mark()?;
        self.inner.set_relay_domains(value)
    }

    /// Not marked: like the transport map, a rebuilt table is picked up without a reload.
    fn write_recipients_map(&self, text: &str) -> Result<(), PostfixError> {
        self.inner.write_recipients_map(text)
    }

    fn set_relay_recipient_maps(&self, value: &str) -> Result<(), PostfixError> {
        self.mark()?;
        self.inner.set_relay_recipient_maps(value)
    }

    fn backup_recipients(
        &self,
        stamp: &str,
        relay_recipient_maps: &str,
        table: Option<&str>,
    ) -> Result<Vec<PathBuf>, PostfixError> {
        self.inner
            .backup_recipients(stamp, relay_recipient_maps, table)
    }

    fn reload(&self) -> Result<(), PostfixError> {
        self.inner.reload()?;
        self.clear();
        Ok(())
    }
}
