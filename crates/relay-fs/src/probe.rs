//! What `relay-sync check` needs to tell whether relay-sync could write somewhere, without
//! writing anything that stays or through anything someone planted.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use std::os::unix::fs::MetadataExt;

use crate::trust::trusted_link;
use crate::write::{not_regular, temp_in, TEMP_SUFFIX};
use crate::{io, FsError};

/// An empty file of an unpredictable name (`.relay-sync-check.RANDOM.relay-sync.tmp`), created
/// `O_CREAT|O_EXCL|O_NOFOLLOW` in a directory to show that relay-sync can create files there
/// (and, in container mode, that the container sees it). Removed when dropped.
#[derive(Debug)]
pub struct Probe {
    file: tempfile::NamedTempFile,
}

impl Probe {
    /// Creates the probe in `dir`.
    pub fn create_in(dir: &Path) -> Result<Probe, FsError> {
        Ok(Probe {
            file: temp_in(dir, "relay-sync-check")?,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether `name` is a probe's name: a leftover of a `check` that was killed.
    pub fn is_probe_name(name: &str) -> bool {
        name.starts_with(".relay-sync-check.") && name.ends_with(TEMP_SUFFIX)
    }
}

/// Whether relay-sync could append to the existing file at `path`: opened for writing with
/// `O_APPEND|O_NONBLOCK|O_NOFOLLOW` (through root's own link only), which writes nothing and
/// never waits for a FIFO's reader; it must be a regular file.
pub fn check_writable(path: &Path) -> Result<(), FsError> {
    let target = trusted_link(path)?;
    let target = target.as_deref().unwrap_or(path);
    if let Ok(meta) = std::fs::symlink_metadata(target) {
        if !meta.file_type().is_file() {
            return Err(not_regular("it", path, meta.mode()));
        }
    }
    let file: File = OpenOptions::new()
        .append(true)
        .custom_flags(
            (rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::NONBLOCK
                | rustix::fs::OFlags::NOCTTY
                | rustix::fs::OFlags::CLOEXEC)
                .bits()
                .cast_signed(),
        )
        .open(target)
        .map_err(|source| io("open for writing", path, source))?;
    let meta = file
        .metadata()
        .map_err(|source| io("inspect", path, source))?;
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(not_regular("it", path, meta.mode()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::testing::{assert_untouched, fifo, refusal, victim};

    #[test]
    fn a_probe_has_a_random_name_never_opens_a_link_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        // Links at the names of every process id a probe was once named after.
        for pid in 1..=64 {
            std::os::unix::fs::symlink(
                &victim,
                dir.path().join(format!(".relay-sync-check.{pid}")),
            )
            .unwrap();
        }
        let probe = Probe::create_in(dir.path()).unwrap();
        let path = probe.path().to_owned();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(Probe::is_probe_name(&name), "{name}");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        let other = Probe::create_in(dir.path()).unwrap();
        assert_ne!(other.path(), path);
        drop(probe);
        assert!(
            fs::symlink_metadata(&path).is_err(),
            "the probe was left behind"
        );
        assert_untouched(&victim);
    }

    #[test]
    fn writability_is_checked_without_writing_or_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay_sync.prom");
        fs::write(&file, "x").unwrap();
        check_writable(&file).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "x");
        let pipe = dir.path().join("fifo.prom");
        fifo(&pipe);
        let text = refusal(check_writable(&pipe));
        assert!(
            text.contains("it is a FIFO (named pipe), not a regular file"),
            "{text}"
        );
        assert!(text.contains(&pipe.display().to_string()), "{text}");
    }
}
