//! Just enough SMTP for the soak's observer: many `RCPT TO` in one session (each gets its own
//! reply, so one connection checks a batch of domains) and one message with headers of ours.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long the observer waits for a connection. Loopback answers at once when Postfix runs;
/// a stopped Postfix refuses at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may take: a session that meets an inline change can pause for seconds
/// while Postfix waits for main.cf to be a second old (smtp.rs of the e2e tests measured up to
/// 10 s once).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const SENDER: &str = "soak@outside.example";

/// Why a message was not accepted.
#[derive(Debug)]
pub(super) enum Refused {
    /// No session: connection refused or broken, or no greeting.
    Unreachable(String),
    /// Postfix answered a command with this reply (e.g. `554 5.7.1 … Relay access denied`).
    Reply(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unreachable(why) => write!(f, "no SMTP session: {why}"),
            Refused::Reply(reply) => write!(f, "refused: {reply}"),
        }
    }
}

struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Session {
    fn open(port: u16) -> Result<Session> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut session = Session {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = session.reply()?;
        if !greeting.starts_with("220") {
            bail!("greeting from {addr}: {greeting}");
        }
        session.expect("EHLO soak.relay-sync.test", "250")?;
        session.expect(&format!("MAIL FROM:<{SENDER}>"), "250")?;
        Ok(session)
    }

    /// One reply, the last line of a multi-line one (`250-…` lines continue it).
    fn reply(&mut self) -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed");
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line.trim_end().to_owned());
            }
        }
    }

    fn command(&mut self, command: &str) -> Result<String> {
        self.writer.write_all(format!("{command}\r\n").as_bytes())?;
        self.reply()
    }

    fn expect(&mut self, command: &str, code: &str) -> Result<String> {
        let reply = self.command(command)?;
        if !reply.starts_with(code) {
            bail!("{command}: {reply}");
        }
        Ok(reply)
    }

    fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n");
    }
}

/// The reply code to `RCPT TO:<soak@DOMAIN>` for each of `domains`, in one session.
pub(super) fn rcpt_codes(port: u16, domains: &[String]) -> Result<Vec<u16>> {
    let mut session = Session::open(port)?;
    let mut codes = Vec::with_capacity(domains.len());
    for domain in domains {
        let reply = session.command(&format!("RCPT TO:<soak@{domain}>"))?;
        let code = reply
            .get(..3)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("RCPT TO:<soak@{domain}>: {reply}"))?;
        codes.push(code);
    }
    session.quit();
    Ok(codes)
}

/// Sends one message to `to`, with `headers` (`Name: value` lines) at the top.
pub(super) fn send(port: u16, to: &str, headers: &[String]) -> Result<(), Refused> {
    let mut session = Session::open(port).map_err(|e| Refused::Unreachable(format!("{e:#}")))?;
    let unreachable = |e: anyhow::Error| Refused::Unreachable(format!("{e:#}"));
    let reply = session
        .command(&format!("RCPT TO:<{to}>"))
        .map_err(unreachable)?;
    if !reply.starts_with("250") {
        return Err(Refused::Reply(reply));
    }
    let reply = session.command("DATA").map_err(unreachable)?;
    if !reply.starts_with("354") {
        return Err(Refused::Reply(reply));
    }
    let mut message = format!("From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: relay-sync soak\r\n");
    for header in headers {
        message.push_str(header);
        message.push_str("\r\n");
    }
    message.push_str("\r\nsoak\r\n.");
    let reply = session.command(&message).map_err(unreachable)?;
    if !reply.starts_with("250") {
        return Err(Refused::Reply(reply));
    }
    session.quit();
    Ok(())
}
