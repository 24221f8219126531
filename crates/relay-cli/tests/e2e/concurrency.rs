//! SPEC §2 step 1 under real contention: many runs started at the same instant.

use std::process::Stdio;

use crate::gateway::Gateway;

const SEEDED: &str = "example.com, example.net, example.org, kuma8088.com, shop.example.jp";

/// Eight runs started at once: exactly one applies the change, the seven others log
/// `Another sync is running, skipping` and exit 0, and the result is what one run would give.
#[test]
fn eight_runs_at_once_one_applies_the_others_skip() {
    let gw = Gateway::start("kuma8088.com, old.example", "");
    let children: Vec<_> = (0..8)
        .map(|_| {
            gw.command(&[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let log = gw.log();
    for output in &outputs {
        assert_eq!(output.status.code(), Some(0), "{output:?}\n{log}");
        // Not a terminal: stderr carries ERROR lines only, and there are none.
        assert!(output.stderr.is_empty(), "{output:?}");
    }
    assert_eq!(
        log.matches("INFO: Another sync is running, skipping")
            .count(),
        7,
        "{log}"
    );
    assert_eq!(
        log.matches("Relay Domains Sync Started").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("Domain changes detected").count(), 1, "{log}");
    assert_eq!(
        log.matches("INFO: Postfix reloaded successfully").count(),
        1,
        "{log}"
    );
    assert_eq!(gw.relay_domains(), SEEDED);
    assert_eq!(gw.lookup("old.example"), None);
    assert_eq!(
        gw.lookup("example.com").as_deref(),
        Some("smtp:[127.0.0.1]:2525")
    );
    // The lock is free again and the state converged.
    gw.sync_expecting(0);
    assert!(gw.log().contains("No changes detected"), "{}", gw.log());
}
