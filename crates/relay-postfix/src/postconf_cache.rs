//! What `postconf` printed at startup, kept between runs while `main.cf` stays the same file.
//!
//! `postconf` reads all of `main.cf` and `master.cf` and every parameter's default: about
//! 9 ms, most of a no-change run. What it prints for `transport_maps`,
//! `default_database_type`, `relay_domains` and `relay_recipient_maps` (raw, `-h`) depends only on `main.cf` and on
//! the installed Postfix. The cache is keyed by both: `main.cf`'s device, inode, size, mtime
//! and ctime (a rename by `postconf -e` gives a new inode; an edit in place a new ctime, which
//! no tool can set back), and the same of the `postconf` binary (an upgrade may change a
//! default). Like git's index, it does not trust a `main.cf` changed in the last two seconds:
//! an edit within the file system's timestamp granularity of the recorded one could otherwise
//! look unchanged.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use relay_fs::Kind;

const HEADER: &str =
    "# relay-sync: postconf values cached while main.cf is unchanged; safe to delete";

/// The values cached, in `postconf -h` order, one per name asked for.
pub(crate) type Values = Vec<String>;

/// The cache key for `main.cf` in `config_dir` and the `postconf` in `command_dir`, or `None`
/// when either cannot be inspected or `main.cf` changed too recently to be trusted.
pub(crate) fn key(config_dir: &Path, command_dir: &Path) -> Option<String> {
    key_settled(config_dir, command_dir, Duration::from_secs(2))
}

/// [`key`], trusting a `main.cf` whose mtime and ctime are at least `settle` old.
fn key_settled(config_dir: &Path, command_dir: &Path, settle: Duration) -> Option<String> {
    let main_cf = fs::metadata(config_dir.join("main.cf")).ok()?;
    let postconf = fs::metadata(command_dir.join("postconf")).ok()?;
    let now = SystemTime::now();
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(main_cf.ctime()).ok()?,
            u32::try_from(main_cf.ctime_nsec()).ok()?,
        );
    let modified = main_cf.modified().ok()?;
    for time in [modified, changed] {
        if now.duration_since(time).ok()? < settle {
            return None;
        }
    }
    let stamp = |m: &fs::Metadata| {
        format!(
            "{}:{}:{}:{}.{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
    };
    Some(format!(
        "{} {} {}",
        config_dir.display(),
        stamp(&main_cf),
        stamp(&postconf)
    ))
}

/// The values stored under `key`, if the file holds exactly that key and only this user can
/// have written it: its `relay_domains` goes back into `postconf -e`, so a cache another local
/// user could write, or plant a link or a FIFO at, is ignored (relay-fs reads it as a file
/// relay-sync keeps: [`Kind::POSTCONF_CACHE`]).
pub(crate) fn load(path: &Path, key: &str, names: &[&str]) -> Option<Values> {
    let text = match relay_fs::read_to_string(Kind::POSTCONF_CACHE, path) {
        Ok(text) => text?,
        Err(error) => {
            tracing::debug!("postconf cache ignored: {error}");
            return None;
        }
    };
    let mut lines = text.lines();
    if lines.next()? != HEADER || lines.next()?.strip_prefix("key ")? != key {
        return None;
    }
    let mut value = |name: &str| {
        lines
            .next()?
            .strip_prefix(name)?
            .strip_prefix(" = ")
            .map(str::to_owned)
    };
    let values: Option<Values> = names.iter().map(|name| value(name)).collect();
    // Exactly these names: a cache of other names is another cache.
    values.filter(|_| lines.next().is_none())
}

/// Stores `values` under `key`, replacing the file atomically; a failure only costs the next
/// run a postconf, so it is logged and otherwise ignored.
pub(crate) fn save(path: &Path, key: &str, names: &[&str], values: &[String]) {
    if values.iter().any(|v| v.contains(['\n', '\r'])) || names.len() != values.len() {
        return;
    }
    let mut text = format!("{HEADER}\nkey {key}\n");
    for (name, value) in names.iter().zip(values) {
        text.push_str(&format!("{name} = {value}\n"));
    }
    if let Err(error) = relay_fs::replace(path, text.as_bytes(), 0o600) {
        tracing::debug!("postconf cache not saved: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: [&str; 3] = ["transport_maps", "default_database_type", "relay_domains"];
    const FOUR: [&str; 4] = [
        "transport_maps",
        "default_database_type",
        "relay_domains",
        "relay_recipient_maps",
    ];

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_value_round_trips_only_under_its_own_key_and_names() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("postconf.cache");
        let values = strings(&[
            "hash:/etc/postfix/transport",
            "hash",
            "$mydestination, a.example",
            "hash:/etc/postfix/relay_recipients",
        ]);
        save(&path, "k1", &FOUR, &values);
        assert_eq!(load(&path, "k1", &FOUR), Some(values.clone()));
        assert_eq!(load(&path, "k2", &FOUR), None);
        // The names asked for must be exactly the names stored.
        assert_eq!(load(&path, "k1", &THREE), None);
        // Three names, as without recipient validation: the file is what it always was.
        let three = strings(&["", "lmdb", ""]);
        save(&path, "k1", &THREE, &three);
        assert_eq!(
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")),
            format!("{HEADER}\nkey k1\ntransport_maps = \ndefault_database_type = lmdb\nrelay_domains = \n")
        );
        assert_eq!(load(&path, "k1", &THREE), Some(three));
        assert_eq!(load(&path, "k1", &FOUR), None);
        // A value with a line break is never stored.
        save(&path, "k3", &THREE, &strings(&["a\nb", "", ""]));
        assert_eq!(load(&path, "k3", &THREE), None);
    }

    #[test]
    fn a_cache_others_could_write_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("postconf.cache");
        let values = strings(&["", "hash", "a.example"]);
        save(&path, "k", &THREE, &values);
        let load = |path: &Path| load(path, "k", &THREE);
        assert_eq!(load(&path), Some(values.clone()));
        let mode = |p: &Path, m: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap_or_else(|e| panic!("{e}"))
        };
        mode(&path, 0o620);
        assert_eq!(load(&path), None, "group-writable file");
        mode(&path, 0o600);
        mode(dir.path(), 0o777);
        assert_eq!(load(&path), None, "world-writable directory");
        mode(dir.path(), 0o700);
        assert_eq!(load(&path), Some(values.clone()));
        // A symbolic link (mode 0777) to the cache is not the cache.
        let link = dir.path().join("link.cache");
        std::os::unix::fs::symlink(&path, &link).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&link), None, "symbolic link");
        // A FIFO is neither read nor waited on.
        let fifo = dir.path().join("fifo.cache");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|status| status.success()), "mkfifo");
        assert_eq!(load(&fifo), None, "FIFO");
        // Another owner (only root can give a file away; the tests run as root).
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&path), None, "file owned by nobody");
    }

    #[test]
    fn a_recently_changed_main_cf_gives_no_key_and_any_change_a_new_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let main_cf = dir.path().join("main.cf");
        fs::write(&main_cf, "relay_domains = a.example\n").unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("postconf"), "").unwrap_or_else(|e| panic!("{e}"));
        // Just written: not trusted.
        assert_eq!(key(dir.path(), dir.path()), None);
        let first = key_settled(dir.path(), dir.path(), Duration::ZERO);
        assert!(first.is_some());
        // An edit in place, with the old mtime put back: another key.
        let old = fs::metadata(&main_cf)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(&main_cf, "relay_domains = a.example, b.example\n")
            .unwrap_or_else(|e| panic!("{e}"));
        fs::File::options()
            .write(true)
            .open(&main_cf)
            .and_then(|f| f.set_modified(old))
            .unwrap_or_else(|e| panic!("{e}"));
        let second = key_settled(dir.path(), dir.path(), Duration::ZERO);
        assert!(second.is_some());
        assert_ne!(first, second);
        // A rename over it (what postconf -e does): another key.
        let replacement = dir.path().join("main.cf.new");
        fs::write(&replacement, "relay_domains = a.example, b.example\n")
            .unwrap_or_else(|e| panic!("{e}"));
        fs::rename(&replacement, &main_cf).unwrap_or_else(|e| panic!("{e}"));
        let third = key_settled(dir.path(), dir.path(), Duration::ZERO);
        assert_ne!(second, third);
    }
}
