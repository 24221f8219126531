//! The facade is safe to call from an embedder's tokio runtime: it neither panics (no runtime
//! started inside the caller's) nor blocks the runtime's worker threads while a sync runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_ops::{Config, Gateway, SyncOptions};
use relay_testbed::{MariaDb, Postfix};

/// A private MariaDB with the seed data, a private Postfix relaying `old.example` only, and a
/// config file for them in `dir`.
struct Testbed {
    db: MariaDb,
    postfix: Postfix,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Testbed {
    fn start() -> Testbed {
        let db = MariaDb::start().unwrap();
        db.load_fixtures().unwrap();
        let postfix = Postfix::start("old.example").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay-sync.conf");
        let text = format!(
            "DB_HOST=127.0.0.1\nDB_PORT={port}\nDB_USER=relay_sync\n\
             DB_PASSWORD=relay-sync-test-pw\nDELL_RELAY_IP=127.0.0.1\n\
             POSTFIX_CONFIG_DIR={pf}\nBACKUP_DIR={d}/backup\nLOG_FILE={d}/relay-sync.log\n\
             STATE_DIR={d}/state\n",
            port = db.port(),
            pf = postfix.config_dir().display(),
            d = dir.path().display(),
        );
        fs::write(&config, text).unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        Testbed {
            db,
            postfix,
            dir,
            config,
        }
    }

    fn gateway(&self) -> Gateway {
        let env: [(&str, &str); 0] = [];
        Gateway::new(Config::load(Some(&self.config), env).unwrap())
    }
}

/// A sync that changes `relay_domains` inline waits for main.cf to settle (about 1.5 s) and for
/// Postfix's commands. On a runtime with a single worker thread, a facade that did that work on
/// the worker would stop every other task for as long; the ticker shows it does not.
#[test]
fn sync_and_status_from_an_embedders_runtime_leave_its_workers_free() {
    let bed = Testbed::start();
    let gateway = bed.gateway();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (record, status, sync_took, longest_gap, ticks) = runtime.block_on(async move {
        let done = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let done = Arc::clone(&done);
            async move {
                let mut longest = Duration::ZERO;
                let mut ticks = 0u32;
                let mut last = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                    ticks += 1;
                }
                (longest, ticks)
            }
        });
        let started = Instant::now();
        let (record, status) = tokio::join!(gateway.sync(SyncOptions::default()), gateway.status());
        let sync_took = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let (longest_gap, ticks) = ticker.await.unwrap();
        (record, status, sync_took, longest_gap, ticks)
    });
    assert_eq!(record.exit_code(), 0, "{}", record.outcome);
    let (added, removed) = record.changes();
    assert!(added.contains(&"example.com"), "{added:?}");
    assert_eq!(removed, ["old.example"]);
    // The status read beside the sync answered from files, whatever it found.
    assert_eq!(
        status.transport_file,
        bed.postfix.config_dir().join("transport")
    );
    assert!(
        bed.postfix
            .postconf("relay_domains")
            .unwrap()
            .contains("example.com"),
        "the sync did not apply"
    );
    // The sync took long enough that blocking the worker would show as a gap of about as long.
    assert!(sync_took > Duration::from_millis(800), "{sync_took:?}");
    assert!(
        longest_gap < sync_took / 2,
        "the ticker stalled for {longest_gap:?} during a {sync_took:?} sync ({ticks} ticks)"
    );
    drop(bed.dir);
}

/// The `admin` example, built by `cargo build --examples` (the first step of `cargo xtask test`).
fn admin_example() -> PathBuf {
    // The test binary is target/<profile>/deps/integration-HASH; examples are beside deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let admin = profile_dir.join("examples/admin");
    assert!(
        admin.exists(),
        "{} is missing: build it with `cargo build -p relay-ops --examples` (cargo xtask test does)",
        admin.display()
    );
    admin
}

/// The example does what its doc says: one sync, then the run and the status as JSON, and the
/// run's exit code.
#[test]
fn the_admin_example_syncs_and_prints_status_and_the_run_as_json() {
    let bed = Testbed::start();
    let output = Command::new(admin_example())
        .arg(&bed.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{output:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["run"]["exit_code"], 0, "{value}");
    assert_eq!(value["run"]["removed"][0], "old.example", "{value}");
    assert_eq!(value["status"]["last_run"]["exit_code"], 0, "{value}");
    assert_eq!(value["status"]["consecutive_failures"], 0, "{value}");
    let managed = value["status"]["managed_domains"].as_array().unwrap();
    assert!(managed.iter().any(|d| d == "example.com"), "{value}");

    // A second run finds nothing to do; the database is only read.
    bed.db.sql("SELECT 1").unwrap();
    let again = Command::new(admin_example())
        .arg(&bed.config)
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(value["run"]["result"], "no changes", "{value}");
}

/// An admin tool runs the watcher in-process: `Gateway::watch` on its own runtime, then
/// `sync_now()` after it saved a domain. With a poll a minute away, only the poke can have
/// applied it; the watcher stops when the tool's shutdown future completes, and the tool's
/// other tasks kept ticking throughout.
#[test]
fn an_embedded_watcher_syncs_when_poked_and_stops_on_shutdown() {
    let bed = Testbed::start();
    let mut text = fs::read_to_string(&bed.config).unwrap();
    text.push_str("POLL_INTERVAL=60\n");
    fs::write(&bed.config, text).unwrap();
    let gateway = bed.gateway();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = &bed.db;
    let end = runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watch = gateway.watch(async move {
            let _ = stopped.await;
        });
        let handle = watch.handle();
        let mut status = handle.subscribe();
        // The first sync (the watcher's start) applies the seed data.
        let ready = tokio::time::timeout(
            Duration::from_secs(60),
            status.wait_for(|status| status.ready),
        )
        .await
        .map(|found| found.is_ok());
        assert!(ready == Ok(true), "no first sync: {:?}", handle.status());
        assert_eq!(handle.status().last_exit, Some(0), "{:?}", handle.status());

        // The admin panel saves a domain and pokes the watcher.
        db.sql(
            "UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'legacy.example.net'",
        )
        .unwrap();
        let syncs = handle.status().syncs;
        handle.sync_now();
        let synced = tokio::time::timeout(
            Duration::from_secs(60),
            status.wait_for(|status| status.syncs > syncs),
        )
        .await;
        assert!(
            synced.is_ok(),
            "sync_now did not sync: {:?}",
            handle.status()
        );
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), watch.finished())
            .await
            .expect("the watcher did not stop after its shutdown future completed")
    });
    assert_eq!(end.status.last_exit, Some(0), "{end:?}");
    assert_eq!(end.status.syncs, 2, "{end:?}");
    assert!(
        bed.postfix
            .postconf("relay_domains")
            .unwrap()
            .contains("legacy.example.net"),
        "the poked sync did not apply"
    );
}
