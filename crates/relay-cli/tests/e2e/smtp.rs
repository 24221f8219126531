//! Speaking SMTP to the private Postfix (OT-001, OT-002), through lettre's client connection,
//! which hands back every reply code and text instead of hiding them behind a mail API.

use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::client::SmtpConnection;
use lettre::transport::smtp::commands::{Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::Address;

/// How long a reply may take. Every Postfix program waits until `main.cf` is a second old
/// before reading it, so an SMTP session that meets an inline change can pause for seconds
/// (measured: up to 4 s, once about 10 s); a real sender waits minutes (RFC 5321 §4.5.3.2).
const TIMEOUT: Duration = Duration::from_secs(60);
const SENDER: &str = "sender@outside.example";

fn connect(port: u16) -> Result<SmtpConnection, String> {
    SmtpConnection::connect(
        ("127.0.0.1", port),
        Some(TIMEOUT),
        &ClientId::Domain("client.relay-sync.test".into()),
        None,
        None,
    )
    .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))
}

fn address(text: &str) -> Address {
    text.parse().unwrap()
}

/// `MAIL FROM` and `RCPT TO:<to>`: the reply to RCPT as `CODE TEXT`, e.g. `250 2.1.5 Ok` or
/// `554 5.7.1 <a@b.example>: Relay access denied`.
pub(crate) fn rcpt(port: u16, to: &str) -> String {
    let mut conn = connect(port).unwrap();
    conn.command(Mail::new(Some(address(SENDER)), vec![]))
        .unwrap();
    let reply = match conn.command(Rcpt::new(address(to), vec![])) {
        Ok(response) => format!(
            "{} {}",
            response.code(),
            response.message().collect::<Vec<_>>().join(" ")
        ),
        Err(error) => {
            let code = error.status().map(|c| c.to_string()).unwrap_or_default();
            // lettre's text: "permanent error (554): 5.7.1 <…>: Relay access denied".
            let text = error.to_string();
            let text = text.split_once("): ").map_or(text.as_str(), |(_, t)| t);
            format!("{code} {text}")
        }
    };
    let _ = conn.quit();
    reply
}

/// How long a finished sync may take to reach new SMTP sessions. `postfix reload` returns once
/// it has signalled the master; an idle `smtpd` of the old generation can still take the next
/// connection before it sees the master's word and exits (seen once in CI: a 554 right after a
/// sync that added the domain, 250 on the next try).
const SETTLE: Duration = Duration::from_secs(20);

/// [`rcpt`] until its reply starts with `want`, for at most [`SETTLE`]; the last reply.
pub(crate) fn rcpt_settled(port: u16, to: &str, want: &str) -> String {
    let start = Instant::now();
    let mut reply = rcpt(port, to);
    let first = reply.clone();
    while !reply.starts_with(want) && start.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(100));
        reply = rcpt(port, to);
    }
    if reply != first {
        eprintln!(
            "RCPT TO:<{to}> answered {first:?} first, {reply:?} after {:?}",
            start.elapsed()
        );
    }
    reply
}

/// Sends one message to `to` whose header `X-E2E-Seq` carries `seq`; `Ok` when Postfix
/// accepted it (250 after DATA), `Err` with the reply otherwise.
pub(crate) fn send(port: u16, to: &str, seq: u64) -> Result<(), String> {
    let mut conn = connect(port)?;
    let envelope = Envelope::new(Some(address(SENDER)), vec![address(to)]).unwrap();
    let message = format!(
        "From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: relay-sync e2e {seq}\r\nX-E2E-Seq: {seq}\r\n\r\nmessage {seq}\r\n"
    );
    let result = conn
        .send(&envelope, message.as_bytes())
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = conn.quit();
    result
}

/// The `X-E2E-Seq` numbers in the messages `smtp-sink` wrote, sorted.
pub(crate) fn delivered(messages: &[String]) -> Vec<u64> {
    let mut seqs: Vec<u64> = messages
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("X-E2E-Seq: "))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    seqs.sort_unstable();
    seqs
}

/// Polls `ready` every 100 ms for at most `limit`; returns whether it became true.
pub(crate) fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
