//! The set-up of a file-takeover test, as issue 11 reproduced each takeover: a directory owned
//! by `nobody` ([`nobody_dir`]) holding a link ([`plant`]), at a name relay-sync uses, to a
//! root-owned 0600 file ([`Victim`]); after the write, the victim must be as it was.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The uid and gid of `nobody` and `nogroup`: a local user who is not root.
pub const NOBODY: u32 = 65534;

/// What the victim holds.
const SECRET: &str = "root:$6$secret:19000:0:99999:7:::\n";

/// A root-owned 0600 file with known contents, in a directory of its own that only root can
/// write: what an attacker would like relay-sync to overwrite or give away.
#[derive(Debug)]
pub struct Victim {
    _dir: tempfile::TempDir,
    /// The file.
    pub path: PathBuf,
}

impl Victim {
    /// A new victim file.
    ///
    /// # Panics
    ///
    /// When the file cannot be made; this is test set-up.
    #[allow(clippy::unwrap_used)]
    pub fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shadow");
        fs::write(&path, SECRET).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        Victim { _dir: dir, path }
    }

    /// Asserts that the victim's owner, mode and contents are as they were.
    ///
    /// # Panics
    ///
    /// When anything about the victim changed.
    #[track_caller]
    #[allow(clippy::unwrap_used)]
    pub fn assert_untouched(&self) {
        let meta = fs::symlink_metadata(&self.path).unwrap();
        assert!(meta.file_type().is_file(), "{}", self.path.display());
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "victim's owner changed");
        assert_eq!(meta.mode() & 0o7777, 0o600, "victim's mode changed");
        assert_eq!(
            fs::read_to_string(&self.path).unwrap(),
            SECRET,
            "victim's contents changed"
        );
    }
}

impl Default for Victim {
    fn default() -> Victim {
        Victim::new()
    }
}

/// `dir`, created (mode 0755) and given to `nobody`: a local user can plant anything in it.
///
/// # Panics
///
/// When the directory cannot be made; this is test set-up (as root).
#[allow(clippy::unwrap_used)]
pub fn nobody_dir(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    dir.to_owned()
}

/// A symbolic link at `link` to `target`, owned by `nobody` as if `nobody` had made it.
///
/// # Panics
///
/// When the link cannot be made; this is test set-up (as root).
#[allow(clippy::unwrap_used)]
pub fn plant(link: &Path, target: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
    std::os::unix::fs::lchown(link, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// A FIFO (named pipe) at `path`, owned by `nobody` as if `nobody` had made it: an `open(2)` of
/// it for reading or writing blocks until the other end is opened, which no one ever does.
///
/// # Panics
///
/// When the FIFO cannot be made; this is test set-up (as root).
#[allow(clippy::unwrap_used)]
pub fn plant_fifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path.
    let made = unsafe { libc::mkfifo(name.as_ptr(), 0o666) };
    assert_eq!(made, 0, "mkfifo {}", path.display());
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// A regular file at `path` holding `text`, owned by `nobody` and given `mode` (setuid bits
/// included), as if `nobody` had made it.
///
/// # Panics
///
/// When the file cannot be made; this is test set-up (as root).
#[allow(clippy::unwrap_used)]
pub fn plant_file(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    // After the chown, which clears the setuid and setgid bits.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// What [`Victim`] holds, to look for in a command's output and log: it must never be shown.
pub fn victim_secret() -> &'static str {
    SECRET.trim_end()
}
