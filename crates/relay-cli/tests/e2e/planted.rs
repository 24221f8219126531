//! What relay-sync *reads* is never read through a path someone else controls (issue 18 point 3,
//! issue 19 finding 2), checked on the built binary the way each hole was reproduced: a
//! directory owned by `nobody` holding a link or a FIFO planted at a name relay-sync reads;
//! then a run, bounded in time so that a hang fails the test instead of stalling it; then: no
//! hang, no secret shown, the run recorded, the victim unchanged.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use relay_testbed::takeover::{
    nobody_dir, plant, plant_fifo, plant_file, victim_secret, Victim, NOBODY,
};

use crate::gateway::{Gateway, Run};

/// How long a run may take before it counts as hung: a sync against the private MariaDB and
/// Postfix takes a second or two, even on a busy machine.
const HANG: Duration = Duration::from_secs(60);

/// Runs the binary with `args` (and `RELAY_SYNC_*` overrides `env`), killing it when it has
/// not ended within [`HANG`]; `Err` with what it printed when it had to be killed.
fn bounded(gw: &Gateway, args: &[&str], env: &[(&str, &str)]) -> Result<Run, String> {
    let mut command = gw.command(args);
    for (key, value) in env {
        command.env(format!("RELAY_SYNC_{key}"), value);
    }
    wait_bounded(command)
}

/// [`bounded`] under an address-space limit of 4 GiB: a run that reads a device without end
/// fails there instead of taking every other process's memory with it.
fn bounded_in_4_gib(gw: &Gateway, args: &[&str]) -> Result<Run, String> {
    let mut command = gw.command(args);
    // SAFETY: setrlimit(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    wait_bounded(command)
}

fn wait_bounded(mut command: std::process::Command) -> Result<Run, String> {
    let out = tempfile::tempdir().unwrap();
    let stdout = out.path().join("stdout");
    let stderr = out.path().join("stderr");
    command
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(&stderr).unwrap());
    let mut child: Child = command.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > HANG {
            // Only the child this test started, by its own handle.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |path: &Path| {
        let mut text = String::new();
        let _ = fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
        text
    };
    let run = Run {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: read(&stdout),
        stderr: read(&stderr),
    };
    match status {
        Some(_) => Ok(run),
        None => Err(format!("still running after {}s: {run:?}", HANG.as_secs())),
    }
}

/// An `ALERT_COMMAND` script (in a directory of its own, root's) that appends
/// `SEVERITY|SUBJECT` to the returned file.
fn alert_script(dir: &Path) -> (PathBuf, PathBuf) {
    let alerts = dir.join("alerts.log");
    let script = dir.join("alert.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >/dev/null\n\
             echo \"$RELAY_SYNC_ALERT_SEVERITY|$RELAY_SYNC_ALERT_SUBJECT\" >> '{}'\n",
            alerts.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, alerts)
}

/// A gateway that records its runs where the test can see them whatever happens to
/// `STATE_DIR`: a metrics file and an alert script in root's own directory. Alerts come after
/// the default number of failed runs (`ALERT_AFTER_FAILURES` is not set).
struct Recorded {
    gw: Gateway,
    metrics: PathBuf,
    alerts: PathBuf,
    _scripts: tempfile::TempDir,
}

impl Recorded {
    fn start(extra: &str) -> Recorded {
        let scripts = tempfile::tempdir().unwrap();
        let (script, alerts) = alert_script(scripts.path());
        let metrics = scripts.path().join("relay_sync.prom");
        let gw = Gateway::start(
            "kuma8088.com",
            &format!(
                "ALERT_COMMAND={}\nMETRICS_FILE={}\n{extra}",
                script.display(),
                metrics.display()
            ),
        );
        Recorded {
            gw,
            metrics,
            alerts,
            _scripts: scripts,
        }
    }

    /// The exit code the metrics file recorded for the last run.
    fn recorded_exit(&self) -> Option<u8> {
        fs::read_to_string(&self.metrics)
            .ok()?
            .lines()
            .find_map(|line| {
                line.strip_prefix("relay_sync_last_exit_code ")?
                    .parse()
                    .ok()
            })
    }

    fn alerts(&self) -> String {
        fs::read_to_string(&self.alerts).unwrap_or_default()
    }
}

/// Asserts that none of `texts` shows the victim's contents.
#[track_caller]
fn assert_no_secret(texts: &[&str]) {
    for text in texts {
        assert!(
            !text.contains(victim_secret()),
            "the victim's contents were shown:\n{text}"
        );
    }
}

/// `STATE_DIR/hold`, replaced by `nobody` with a link to a root-only file. Before: every sync
/// exited 0 and changed nothing, and the file's contents were printed in the log's WARN and by
/// `status`. Now the run is refused (exit 2) naming the file and its fix, recorded and alerted,
/// and neither the log nor `status` shows a byte of the victim.
#[test]
fn planted_hold_link_to_a_root_only_file_is_refused_and_never_shown() {
    let rec = Recorded::start("");
    let gw = &rec.gw;
    let state = nobody_dir(&gw.dir.path().join("state"));
    let victim = Victim::new();
    let hold = state.join("hold");
    plant(&hold, &victim.path);
    let files = gw.files_before_first_sync();

    let run = bounded(gw, &[], &[]).unwrap();
    assert_eq!(run.code, 2, "{run:?}\n--- log\n{}", gw.log());
    // The lock there is refused first, for the same reason: the directory is not root's.
    let said = format!("{}{}", run.stderr, gw.log());
    assert!(
        said.contains(&format!("run `chown root {}", state.display())),
        "{said}"
    );
    assert_eq!(
        gw.files_before_first_sync(),
        files,
        "a refused run changed Postfix"
    );
    assert_eq!(rec.recorded_exit(), Some(2), "the run was not recorded");
    assert!(
        rec.alerts().contains("warning|"),
        "not alerted: {}",
        rec.alerts()
    );

    let status = bounded(gw, &["status"], &[]).unwrap();
    let json = bounded(gw, &["status", "--json"], &[]).unwrap();
    let check = bounded(gw, &["check"], &[]).unwrap();
    assert!(
        status.stdout.contains(&hold.display().to_string()),
        "{status:?}"
    );
    assert_eq!(check.code, 1, "{check:?}");
    assert_no_secret(&[
        &run.stdout,
        &run.stderr,
        &gw.log(),
        &status.stdout,
        &status.stderr,
        &json.stdout,
        &check.stdout,
    ]);
    victim.assert_untouched();
}

/// A FIFO at `STATE_DIR/hold`. Before: the run hung while it held the lock, and every later
/// cron run exited 0 with "Another sync is running". Now each run is refused at once (exit 2)
/// and recorded; the FIFO is left as it is.
#[test]
fn planted_hold_fifo_never_hangs_a_run() {
    let rec = Recorded::start("");
    let gw = &rec.gw;
    let state = nobody_dir(&gw.dir.path().join("state"));
    let hold = state.join("hold");
    plant_fifo(&hold);

    for _ in 0..2 {
        let run = bounded(gw, &[], &[]).unwrap();
        assert_eq!(run.code, 2, "{run:?}\n--- log\n{}", gw.log());
        assert!(
            !gw.log().contains("Another sync is running"),
            "{}",
            gw.log()
        );
        assert_eq!(rec.recorded_exit(), Some(2), "the run was not recorded");
    }
    let status = bounded(gw, &["status"], &[]).unwrap();
    assert!(
        status.stdout.contains(&hold.display().to_string()),
        "{status:?}"
    );
    assert!(fs::symlink_metadata(&hold).unwrap().file_type().is_fifo());
}

/// A FIFO at `LOG_FILE`, in a log directory `nobody` owns. Before: every run hung before it
/// took the lock or recorded anything. Now the log file is refused, naming it on stderr, and
/// the run ends at once as a failed run (exit 2) that `status` shows.
#[test]
fn planted_log_file_fifo_never_hangs_a_run() {
    let gw = Gateway::start("kuma8088.com", "");
    let logs = nobody_dir(&gw.dir.path().join("log"));
    let log_file = logs.join("relay-sync.log");
    plant_fifo(&log_file);
    let files = gw.files_before_first_sync();

    let run = bounded(&gw, &[], &[]).unwrap();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&log_file.display().to_string()),
        "{run:?}"
    );
    assert_eq!(
        gw.files_before_first_sync(),
        files,
        "a refused run changed Postfix"
    );
    let status = bounded(&gw, &["status", "--json"], &[]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["last_run"]["exit_code"], 2, "{status:#}");
    assert!(
        status["last_run"]["result"]
            .as_str()
            .is_some_and(|r| r.contains(&log_file.display().to_string())),
        "{status:#}"
    );
    assert!(fs::symlink_metadata(&log_file)
        .unwrap()
        .file_type()
        .is_fifo());
}

/// A FIFO at `METRICS_FILE`, in a textfile directory `nobody` owns. Before: every failing run
/// hung after it alerted, and so did `check`. Now `check` names the FIFO and ends, and a
/// failing run ends with its own exit code (3), recorded and alerted, the refusal logged.
#[test]
fn planted_metrics_file_fifo_never_hangs_a_failing_run_or_check() {
    let scripts = tempfile::tempdir().unwrap();
    let (script, alerts) = alert_script(scripts.path());
    let gw = Gateway::start(
        "kuma8088.com",
        &format!(
            "ALERT_COMMAND={}\nALERT_AFTER_FAILURES=1\n",
            script.display()
        ),
    );
    let textfile = nobody_dir(&gw.dir.path().join("textfile"));
    let metrics = textfile.join("relay_sync.prom");
    gw.edit_config(|text| format!("{text}METRICS_FILE={}\n", metrics.display()));
    plant_fifo(&metrics);

    let check = bounded(&gw, &["check"], &[]).unwrap();
    assert_eq!(check.code, 1, "{check:?}");
    let line = check
        .stdout
        .lines()
        .find(|line| line.starts_with("FAIL metrics_file "))
        .unwrap_or_default();
    assert!(line.contains(&metrics.display().to_string()), "{check:?}");
    assert!(fs::symlink_metadata(&metrics)
        .unwrap()
        .file_type()
        .is_fifo());

    let run = bounded(&gw, &[], &[("DB_PASSWORD", "not-the-password")]).unwrap();
    assert_eq!(run.code, 3, "{run:?}\n--- log\n{}", gw.log());
    assert!(
        fs::read_to_string(&alerts)
            .unwrap_or_default()
            .contains("warning|"),
        "not alerted"
    );
    assert!(
        gw.log().contains(&metrics.display().to_string()),
        "{}",
        gw.log()
    );
    let status = bounded(&gw, &["status", "--json"], &[]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["last_run"]["exit_code"], 3, "{status:#}");
}

/// `STATE_DIR/state`, replaced by `nobody` with a link to `/dev/zero`. Before: a run read it
/// until memory ran out. Now the run is refused (exit 2) and recorded, and so is `status`'s
/// read of it; both end at once, within a 4 GiB address space.
#[test]
fn planted_state_link_to_dev_zero_is_refused_without_reading_it() {
    let rec = Recorded::start("");
    let gw = &rec.gw;
    let state = nobody_dir(&gw.dir.path().join("state"));
    plant(&state.join("state"), Path::new("/dev/zero"));

    let run = bounded_in_4_gib(gw, &[]).unwrap();
    assert_eq!(run.code, 2, "{run:?}\n--- log\n{}", gw.log());
    assert_eq!(rec.recorded_exit(), Some(2), "the run was not recorded");
    let status = bounded_in_4_gib(gw, &["status"]).unwrap();
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains(&state.display().to_string()),
        "{status:?}"
    );
    assert!(fs::metadata("/dev/zero")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// A setuid file `nobody` planted as `STATE_DIR/state` (mode 4777). Before: root rewrote it
/// keeping its 4777 mode and its owner. Now the run is refused (exit 2) and recorded, and the
/// state it writes is root's own 0600 file: nothing of the planted file's owner or mode.
#[test]
fn planted_setuid_state_file_lends_neither_its_mode_nor_its_owner() {
    let rec = Recorded::start("");
    let gw = &rec.gw;
    let state = nobody_dir(&gw.dir.path().join("state"));
    let planted = state.join("state");
    plant_file(&planted, "CONSECUTIVE_FAILURES=0\n", 0o4777);
    assert_eq!(fs::metadata(&planted).unwrap().mode() & 0o7777, 0o4777);

    let run = bounded(gw, &[], &[]).unwrap();
    assert_eq!(run.code, 2, "{run:?}\n--- log\n{}", gw.log());
    assert_eq!(rec.recorded_exit(), Some(2), "the run was not recorded");
    for entry in fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7000, 0, "{} is setuid", path.display());
        assert_ne!(meta.uid(), NOBODY, "{} is nobody's", path.display());
    }
    let meta = fs::symlink_metadata(&planted).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
}

/// `check` in container mode, with the transport file in a directory `nobody` owns and a link
/// to a root-only file planted at every name `.relay-sync-check.PID` (every PID there is).
/// Before: `check` wrote its probe through the link of its own PID and truncated the victim.
/// Now the probe has a random name, is created `O_EXCL|O_NOFOLLOW` and removed afterwards.
#[test]
fn check_probe_never_writes_through_a_planted_link() {
    let gw = Gateway::start("kuma8088.com", "");
    let maps = nobody_dir(&gw.dir.path().join("maps"));
    let transport = maps.join("transport");
    gw.postfix
        .command(
            "/usr/sbin/postconf",
            &[
                "-e",
                &format!("transport_maps = hash:{}", transport.display()),
            ],
        )
        .unwrap();
    let prefix = gw.dir.path().join("fake-docker-exec");
    fs::write(
        &prefix,
        "#!/bin/sh\n# Stand-in for `docker exec mailserver-postfix`.\nexec \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755)).unwrap();
    gw.edit_config(|text| {
        format!(
            "{text}TRANSPORT_FILE={}\nPOSTFIX_COMMAND_PREFIX={}\n",
            transport.display(),
            prefix.display()
        )
    });
    gw.sync_expecting(0);
    let victim = Victim::new();
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_max <= 1 << 22, "pid_max {pid_max}");
    let planted = |name: &str| name.starts_with(".relay-sync-check.");
    for pid in 1..=pid_max {
        plant(&maps.join(format!(".relay-sync-check.{pid}")), &victim.path);
    }

    let check = bounded(&gw, &["check"], &[]).unwrap();
    assert!(
        check
            .stdout
            .contains("is the same directory on this host and through the prefix"),
        "{check:?}"
    );
    victim.assert_untouched();
    // Nothing of the probe is left: every name like it is still one of the planted links.
    for entry in fs::read_dir(&maps).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("relay-sync-check") {
            assert!(planted(&name), "{name} left behind");
            assert!(
                entry.file_type().unwrap().is_symlink(),
                "{name} left behind"
            );
        }
    }
}

/// `DB_TLS_CA` naming a FIFO (root's own, mode 0644, in root's directory, so the config's
/// trust check has nothing to say). Before: the run hung opening it, before the connect
/// timeout applied, holding the lock. Now the certificate is read through relay-fs, which
/// refuses what is not a regular file at once: the run fails as a database it cannot reach
/// (exit 3), naming the file, and keeps the configuration.
#[test]
fn a_fifo_at_db_tls_ca_never_hangs_a_run() {
    let gw = Gateway::start("kuma8088.com", "");
    let ca = gw.dir.path().join("ca.pem");
    let name = std::ffi::CString::new(ca.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
    let ca_text = ca.display().to_string();
    let run = bounded(
        &gw,
        &[],
        &[("DB_TLS", "verify-ca"), ("DB_TLS_CA", ca_text.as_str())],
    )
    .unwrap_or_else(|printed| panic!("the run hung on the FIFO at DB_TLS_CA: {printed}"));
    let log = gw.log();
    assert_eq!(run.code, 3, "{run:?}\n--- log\n{log}");
    assert!(
        log.contains(&format!("the CA certificate {ca_text} (DB_TLS_CA)")),
        "{log}"
    );
    assert!(log.contains("Keeping current configuration"), "{log}");
    assert!(fs::symlink_metadata(&ca).unwrap().file_type().is_fifo());
}

/// A FIFO, root's and private (so the owner and mode checks pass), at the config path and at
/// `DB_PASSWORD_FILE`. Before: `check` and a sync blocked in open(2) until something wrote to
/// the FIFO, that is, forever under cron. Now each is refused at once, naming the FIFO: `check`
/// reports it as a failed check (exit 1), a sync as a configuration error (exit 2).
#[test]
fn planted_config_or_password_fifo_never_hangs_check_or_sync() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = |name: &str| {
        let path = dir.path().join(name);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        path
    };
    let config_fifo = fifo("relay-sync.conf");
    let password_fifo = fifo("db-password");
    let config = dir.path().join("with-password-file.conf");
    let d = dir.path().display();
    fs::write(
        &config,
        format!(
            "DB_HOST=127.0.0.1\nDELL_RELAY_IP=127.0.0.1\nPOSTFIX_CONFIG_DIR={d}\n\
             BACKUP_DIR={d}/backup\nSTATE_DIR={d}/state\nLOG_FILE={d}/relay-sync.log\n\
             DB_PASSWORD_FILE={}\n",
            password_fifo.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();

    for (config, fifo) in [(&config_fifo, &config_fifo), (&config, &password_fifo)] {
        let run = |args: &[&str]| {
            let mut command = std::process::Command::new(crate::gateway::BIN);
            command
                .arg("--config")
                .arg(config)
                .args(args)
                .env_remove("RUST_LOG");
            wait_bounded(command).unwrap()
        };
        let what = if fifo == &config_fifo {
            "the config file"
        } else {
            "DB_PASSWORD_FILE"
        };
        // The operator's file is never to be deleted: the fix asks them to look at it.
        let refusal = format!(
            "refusing {}: {what} is a FIFO (named pipe), not a regular file; check that {} is \
             the file meant: {what} must be a regular file (replace it with one, or name one in \
             the setting that names it)",
            fifo.display(),
            fifo.display()
        );
        let check = run(&["check"]);
        assert_eq!(check.code, 1, "{check:?}");
        assert!(
            check
                .stdout
                .lines()
                .any(|line| line.starts_with("FAIL config") && line.ends_with(&refusal)),
            "{check:?}"
        );
        let sync = run(&["sync"]);
        assert_eq!(sync.code, 2, "{sync:?}");
        assert!(sync.stderr.contains(&refusal), "{sync:?}");
        assert!(fs::symlink_metadata(fifo).unwrap().file_type().is_fifo());
    }
    assert!(
        !dir.path().join("state").exists(),
        "a refused configuration recorded a run"
    );
}
