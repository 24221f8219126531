//! Mail through the private Postfix (OT-001, OT-002): what a sync changes is what senders see,
//! and mail for domains that were already relayed keeps flowing while syncs reload Postfix.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relay_testbed::SmtpSink;

use crate::gateway::Gateway;
use crate::smtp::{delivered, rcpt, rcpt_settled, send, wait_until};

/// A gateway whose next hop is `sink` (RELAY_SYNC_DELL_RELAY_PORT wins over the file's 2525).
fn gateway_to(sink: &SmtpSink) -> (Gateway, String) {
    (Gateway::start("kuma8088.com", ""), sink.port().to_string())
}

/// OT-001 and OT-002: after a sync, a newly enabled domain is accepted (250) and its mail
/// reaches smtp-sink on the configured next hop; a disabled domain is refused with
/// `554 5.7.1 … Relay access denied`.
#[test]
fn enabled_domain_is_accepted_and_delivered_disabled_domain_is_refused() {
    let sink = SmtpSink::start().unwrap();
    let (gw, port) = gateway_to(&sink);
    let env = [("DELL_RELAY_PORT", port.as_str())];
    let smtp = gw.postfix.smtp_port();

    // Before any sync the gateway knows only kuma8088.com.
    let reply = rcpt(smtp, "info@fresh.example");
    assert!(
        reply.starts_with("554 5.7.1") && reply.ends_with("Relay access denied"),
        "{reply}"
    );

    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fresh.example', 1)");
    gw.sync_env_expecting(&env, 0);
    let reply = rcpt_settled(smtp, "info@fresh.example", "250 ");
    assert!(reply.starts_with("250 "), "{reply}");
    send(smtp, "info@fresh.example", 1).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || delivered(&sink.messages())
            == [1]),
        "message 1 never reached smtp-sink at 127.0.0.1:{port}\n{}",
        gw.postfix.maillog()
    );
    let message = &sink.messages()[0];
    assert!(message.contains("info@fresh.example"), "{message}");

    // OT-002: disabling a domain makes the gateway refuse it again.
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'fresh.example'");
    gw.sync_env_expecting(&env, 0);
    let reply = rcpt_settled(smtp, "info@fresh.example", "554 ");
    assert_eq!(
        reply,
        "554 5.7.1 <info@fresh.example>: Relay access denied",
        "{}",
        gw.log()
    );
    // The preserved domain and the other seeded domains are still accepted.
    for to in ["postmaster@kuma8088.com", "info@example.com"] {
        // Accepted before the sync and after it: whichever smtpd answers, at once.
        let reply = rcpt(smtp, to);
        assert!(reply.starts_with("250 "), "{to}: {reply}");
    }
}

/// While 10 or more syncs in a row add and remove other domains and reload Postfix, a steady stream of
/// messages to domains that stay relayed loses none: every accepted message is delivered.
#[test]
fn steady_stream_loses_nothing_while_syncs_reload() {
    let sink = SmtpSink::start().unwrap();
    let (gw, port) = gateway_to(&sink);
    let env = [("DELL_RELAY_PORT", port.as_str())];
    gw.sync_env_expecting(&env, 0);
    let smtp = gw.postfix.smtp_port();

    let stop = Arc::new(AtomicBool::new(false));
    let accepted_so_far = Arc::new(AtomicUsize::new(0));
    let sender = {
        let stop = Arc::clone(&stop);
        let accepted_so_far = Arc::clone(&accepted_so_far);
        std::thread::spawn(move || {
            let (mut sent, mut accepted, mut refused) = (0u64, Vec::new(), Vec::new());
            let recipients = [
                "info@example.com",
                "info@example.net",
                "sales@shop.example.jp",
            ];
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let to = recipients[(sent % 3) as usize];
                match send(smtp, to, sent) {
                    Ok(()) => {
                        accepted.push(sent);
                        accepted_so_far.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => refused.push(format!("{sent} {to}: {error}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (sent, accepted, refused)
        })
    };
    // At least 10 syncs, and on until 50 messages went through them: a session that meets an
    // inline change pauses while main.cf is under a second old, so how many fit varies.
    let mut i = 0;
    while i < 10 || (accepted_so_far.load(Ordering::Relaxed) < 50 && i < 40) {
        // Odd runs add a domain, even runs remove the one added before: every run changes
        // relay_domains and the transport map and reloads Postfix.
        if i % 2 == 0 {
            gw.sql(&format!(
                "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('churn{i}.example', 1)"
            ));
        } else {
            gw.sql(&format!(
                "UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'churn{}.example'",
                i - 1
            ));
        }
        gw.sync_env_expecting(&env, 0);
        i += 1;
    }
    // The stream goes on for a moment, as it does on a gateway: a message queued just as the
    // last reload replaced the queue manager can wait for the next message's trigger (or the
    // 300 s wakeup); seen once in CI as 27 messages undelivered after 60 s, none deferred.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (sent, accepted, refused) = sender.join().unwrap();
    let all_delivered = wait_until(Duration::from_secs(60), || {
        delivered(&sink.messages()).len() >= accepted.len()
    });
    let got = delivered(&sink.messages());
    let maillog = gw.postfix.maillog();
    let reloads = gw.log().matches("Postfix reloaded successfully").count();
    println!(
        "mail flow during {i} syncs ({reloads} reloads): sent {sent}, accepted {}, refused {}, delivered {}, lost {}",
        accepted.len(),
        refused.len(),
        got.len(),
        accepted.len().saturating_sub(got.len())
    );
    assert!(reloads >= 10, "{}", gw.log());
    assert!(
        accepted.len() >= 50,
        "too few messages to prove anything: {}",
        accepted.len()
    );
    assert!(refused.is_empty(), "refused: {refused:#?}");
    assert!(
        all_delivered,
        "lost messages; maillog problems:\n{:#?}\nqueue:\n{}\nmaillog:\n{maillog}",
        maillog
            .lines()
            .filter(|l| l.contains("status=") && !l.contains("status=sent"))
            .collect::<Vec<_>>(),
        gw.postfix
            .command("/usr/sbin/postqueue", &["-p"])
            .unwrap_or_else(|e| format!("postqueue -p failed: {e:#}"))
    );
    assert_eq!(got, accepted, "delivered differs from accepted");
}
