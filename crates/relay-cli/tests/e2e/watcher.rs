//! A running `relay-sync watch` for the long-running and fleet tests: started with a config
//! file, signalled, stopped with SIGTERM, and killed if a test fails before it stops it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gateway::BIN;

pub(crate) struct Watcher {
    child: Option<Child>,
}

impl Watcher {
    /// `relay-sync --config CONFIG watch`, with `RELAY_SYNC_KEY=VALUE` for each of `env`;
    /// stdout discarded (the tests read `LOG_FILE`), stderr inherited.
    pub(crate) fn start(config: &Path, env: &[(&str, &str)]) -> Watcher {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(config)
            .arg("watch")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(format!("RELAY_SYNC_{key}"), value);
        }
        Watcher {
            child: Some(command.spawn().unwrap()),
        }
    }

    pub(crate) fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        let sent = unsafe { libc::kill(i32::try_from(pid).unwrap(), signal) };
        assert_eq!(sent, 0, "kill -{signal} {pid}");
    }

    /// SIGKILL, and waits for it: what a crash or the OOM killer does.
    pub(crate) fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then its exit code; it must exit within `limit`.
    pub(crate) fn stop(mut self, limit: Duration) -> i32 {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < limit,
                "relay-sync watch did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
