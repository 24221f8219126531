//! Crash safety (SPEC §2, last paragraph): a run killed with SIGKILL at any step leaves whole
//! files, a free lock and no temporary files once the next run is done, and that run
//! converges; lookups never miss while the transport map is rebuilt.
//!
//! The test-only hook that stops a run at a named step is a `POSTFIX_COMMAND_DIR` of stand-in
//! scripts ([`Gateway::stand_in_commands`]): the script for the step writes a marker file and
//! sleeps, and the test then kills the run's whole process group (relay-sync and the script)
//! with SIGKILL, as a power loss would. Nothing in the binary knows about it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::gateway::{files_starting_with, Gateway};
use crate::smtp::{rcpt_settled, wait_until};

const HOP: &str = "smtp:[127.0.0.1]:2525";

/// The shell that counts calls of one kind in `$0.count`, for "the second postmap build".
const COUNT: &str = r#"n=$(( $(cat "$0.count" 2>/dev/null || echo 0) + 1 )); echo $n > "$0.count""#;

/// A named point of a run where the stand-in commands stop it, and the scripts that do so.
struct KillPoint {
    name: &'static str,
    program: &'static str,
    body: String,
}

fn pause(marker: &Path) -> String {
    format!("touch '{}'; sleep 60", marker.display())
}

/// Every apply step of SPEC §2 step 7, in order.
fn kill_points(marker: &Path) -> Vec<KillPoint> {
    let pause = pause(marker);
    let postmap_after_build = |n: u32| {
        format!(
            "case \" $* \" in *\" -q \"*) exec /usr/sbin/postmap \"$@\";; esac\n{COUNT}\n\
             /usr/sbin/postmap \"$@\"; rc=$?\nif [ $n -eq {n} ]; then {pause}; fi\nexit $rc"
        )
    };
    vec![
        // The union transport is built under its temporary name but not renamed into place.
        KillPoint {
            name: "union map built, not renamed",
            program: "postmap",
            body: postmap_after_build(1),
        },
        KillPoint {
            name: "before postconf -e relay_domains",
            program: "postconf",
            body: format!(
                "case \" $* \" in *\" -e \"*) {pause};; esac\nexec /usr/sbin/postconf \"$@\""
            ),
        },
        KillPoint {
            name: "before postfix reload",
            program: "postfix",
            body: format!(
                "case \" $* \" in *\" reload \"*) {pause};; esac\nexec /usr/sbin/postfix \"$@\""
            ),
        },
        KillPoint {
            name: "final map built, not renamed",
            program: "postmap",
            body: postmap_after_build(2),
        },
        KillPoint {
            name: "during verification (postmap -q)",
            program: "postmap",
            body: format!(
                "case \" $* \" in *\" -q \"*) {pause};; esac\nexec /usr/sbin/postmap \"$@\""
            ),
        },
    ]
}

/// Starts a sync with `commands` as POSTFIX_COMMAND_DIR in its own process group, waits for
/// the marker, and kills the group with SIGKILL.
fn run_and_kill(gw: &Gateway, commands: &Path, marker: &Path, step: &str) {
    let _ = fs::remove_file(marker);
    let mut child = gw
        .command(&[])
        .env("RELAY_SYNC_POSTFIX_COMMAND_DIR", commands)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let reached = wait_until(Duration::from_secs(30), || marker.exists());
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        reached,
        "{step}: the run never reached the step\n{}",
        gw.log()
    );
    assert!(killed.success(), "{step}: kill failed");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{step}"
    );
}

/// Postfix can read every file: main.cf (`postconf -n`) and the whole map (`postmap -s`), and
/// every database domain in `relay_domains` has its transport entry.
fn assert_whole(gw: &Gateway, step: &str) {
    gw.postfix
        .command("/usr/sbin/postconf", &["-n"])
        .unwrap_or_else(|e| panic!("{step}: main.cf: {e}"));
    let dump = gw
        .postfix
        .command(
            "/usr/sbin/postmap",
            &["-s", &format!("hash:{}", gw.transport_path().display())],
        )
        .unwrap_or_else(|e| panic!("{step}: transport map: {e}"));
    let mapped: BTreeSet<&str> = dump
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let transport = gw.transport();
    assert!(
        transport.is_empty() || transport.ends_with('\n'),
        "{step}: torn transport file"
    );
    for line in transport.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.ends_with(HOP), "{step}: torn transport line {line:?}");
    }
    for domain in gw
        .relay_domains()
        .split(", ")
        .filter(|d| *d != "kuma8088.com")
    {
        assert!(
            mapped.contains(domain),
            "{step}: {domain} is relayed without a transport entry\n{dump}"
        );
    }
}

fn assert_lock_free(gw: &Gateway, step: &str) {
    let lock = File::open(gw.dir.path().join("state/relay-sync.lock")).unwrap();
    lock.try_lock()
        .unwrap_or_else(|e| panic!("{step}: the lock is still held: {e}"));
}

fn temp_files(gw: &Gateway) -> Vec<String> {
    files_starting_with(&gw.postfix.config_dir(), ".")
        .into_iter()
        .chain(files_starting_with(&gw.postfix.config_dir(), "__db."))
        .collect()
}

/// SIGKILL at each apply step: files stay whole and Postfix never relays a domain without a
/// transport entry; the lock is free; the next run converges and leaves no temporary file.
#[test]
fn killed_at_each_step_the_next_run_converges() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    let marker = gw.dir.path().join("paused");
    for (i, point) in kill_points(&marker).into_iter().enumerate() {
        let step = point.name;
        // One domain in and one out, so the run has every step, the removal included.
        gw.sql(&format!(
            "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('crash{i}.example', 1); \
             UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = '{}'",
            if i == 0 { "example.net".to_owned() } else { format!("crash{}.example", i - 1) }
        ));
        let commands = gw.stand_in_commands(&format!("kill-{i}"), &[(point.program, &point.body)]);
        run_and_kill(&gw, &commands, &marker, step);
        assert_whole(&gw, step);
        assert_lock_free(&gw, step);

        gw.sync_expecting(0);
        assert!(
            gw.relay_domains().contains(&format!("crash{i}.example")),
            "{step}: {}",
            gw.log()
        );
        assert_eq!(
            gw.lookup(&format!("crash{i}.example")).as_deref(),
            Some(HOP),
            "{step}"
        );
        assert_whole(&gw, step);
        assert_eq!(temp_files(&gw), Vec::<String>::new(), "{step}");
        let log_before = gw.log().len();
        gw.sync_expecting(0);
        assert!(
            gw.log()[log_before..].contains("No changes detected"),
            "{step}: the run after recovery did not converge\n{}",
            gw.log()
        );
    }
}

/// Killed between `postconf -e` and `postfix reload`: main.cf already relays the new domain but
/// Postfix's running processes were never told. The next run finds every file converged, and
/// still reloads (`STATE_DIR/reload.pending`), so the domain is accepted right after it, on a
/// Postfix nobody restarted by hand.
#[test]
fn killed_before_the_reload_the_next_run_reloads() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    let marker = gw.dir.path().join("paused");
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('pending.example', 1)");
    let commands = gw.stand_in_commands(
        "kill-before-reload",
        &[(
            "postfix",
            &format!(
                "case \" $* \" in *\" reload \"*) {};; esac\nexec /usr/sbin/postfix \"$@\"",
                pause(&marker)
            ),
        )],
    );
    run_and_kill(&gw, &commands, &marker, "before postfix reload");
    assert!(gw.relay_domains().contains("pending.example"));
    assert!(gw.dir.path().join("state/reload.pending").exists());

    let log_before = gw.log().len();
    gw.sync_expecting(0);
    let log = gw.log()[log_before..].to_owned();
    assert!(log.contains("stopped before Postfix reloaded"), "{log}");
    assert!(log.contains("Postfix reloaded successfully"), "{log}");
    assert!(!gw.dir.path().join("state/reload.pending").exists());
    let reply = rcpt_settled(gw.postfix.smtp_port(), "info@pending.example", "250");
    assert!(reply.starts_with("250"), "{reply}");

    // Done once: the run after it has nothing to do.
    let log_before = gw.log().len();
    gw.sync_expecting(0);
    assert!(gw.log()[log_before..].contains("No changes detected"));
}

/// A run killed after building its temporary map, when the database then goes back to what
/// Postfix already has: the next run has nothing to write, and still removes the leftovers.
#[test]
fn leftover_temporary_files_are_removed_by_a_run_with_nothing_to_do() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    let marker = gw.dir.path().join("paused");
    let point = kill_points(&marker).remove(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('brief.example', 1)");
    let commands = gw.stand_in_commands("kill", &[(point.program, &point.body)]);
    run_and_kill(&gw, &commands, &marker, point.name);
    assert_ne!(
        temp_files(&gw),
        Vec::<String>::new(),
        "the kill left nothing to clean up"
    );
    gw.sql("DELETE FROM mailserver_usermgmt.domains WHERE name = 'brief.example'");
    gw.sync_expecting(0);
    assert!(gw.log().contains("No changes detected"), "{}", gw.log());
    assert_eq!(temp_files(&gw), Vec::<String>::new());
    assert_whole(&gw, point.name);
}

/// SPEC §2 step 7: the map is built under a temporary name and renamed into place, so a loop of
/// `postmap -q` lookups of an untouched domain never misses while 20 syncs rebuild a
/// 100,000-entry map. (Rebuilt in place, the same loop misses: DATABASE_README.)
#[test]
fn lookups_never_miss_while_20_syncs_rebuild_a_100k_map() {
    let gw = Gateway::start("kuma8088.com", "");
    let mut text = String::from("# hand-written routes, kept by relay-sync\n");
    text.push_str("untouched.example smtp:[192.0.2.25]:25\n");
    for i in 0..100_000 {
        text.push_str(&format!("bulk{i}.example {HOP}\n"));
    }
    fs::write(gw.transport_path(), &text).unwrap();
    gw.sync_expecting(0);
    assert_eq!(
        gw.lookup("untouched.example").as_deref(),
        Some("smtp:[192.0.2.25]:25")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let looker = {
        let stop = Arc::clone(&stop);
        let config = gw.postfix.config_dir();
        let map = format!("hash:{}", gw.transport_path().display());
        std::thread::spawn(move || {
            let (mut lookups, mut misses) = (0u32, Vec::new());
            // Bounded: at most 20,000 lookups or 5 minutes, whichever comes first.
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && lookups < 20_000 && Instant::now() < deadline {
                let out = Command::new("/usr/sbin/postmap")
                    .arg("-c")
                    .arg(&config)
                    .args(["-q", "untouched.example", &map])
                    .output()
                    .unwrap();
                lookups += 1;
                let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !out.status.success() || found != "smtp:[192.0.2.25]:25" {
                    misses.push(format!(
                        "{}: {found:?} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            (lookups, misses)
        })
    };
    let started = Instant::now();
    for _ in 0..20 {
        // A source newer than its database makes the run rebuild the map (SPEC §2 step 5).
        let source = File::options()
            .write(true)
            .open(gw.transport_path())
            .unwrap();
        source.set_modified(SystemTime::now()).unwrap();
        drop(source);
        gw.sync_expecting(0);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (lookups, misses) = looker.join().unwrap();
    let rebuilds = gw.log().matches("INFO: Postmap successful").count() - 1;
    println!(
        "100k map: {rebuilds} rebuilds in {:.1} s, {lookups} lookups, {} misses",
        elapsed.as_secs_f64(),
        misses.len()
    );
    assert_eq!(rebuilds, 20, "{}", gw.log());
    assert!(
        lookups >= 20,
        "too few lookups to prove anything: {lookups}"
    );
    assert!(
        misses.is_empty(),
        "{} misses: {:#?}",
        misses.len(),
        &misses[..misses.len().min(10)]
    );
    assert_eq!(gw.lookup("bulk99999.example").as_deref(), Some(HOP));
}
