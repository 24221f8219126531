//! Sending alerts (SPEC §7): through `ALERT_COMMAND` and/or by mail. A failing alert is logged
//! and never changes the run's outcome.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::{Message, SmtpTransport, Transport};

use crate::config::Config;
use crate::failures::Alert;
/// SMTP connect and command timeout.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `alert` every way the config asks for, logging each success or failure.
pub(crate) fn send(config: &Config, host: &str, alert: &Alert) {
    if config.alert_command.is_none() && config.alert_email_to.is_none() {
        tracing::warn!(
            "Alert not sent (set ALERT_COMMAND or ALERT_EMAIL_TO): {}",
            alert.subject
        );
        return;
    }
    if let Some(command) = &config.alert_command {
        match run_command(command, alert, config.command_timeout) {
            Ok(()) => tracing::info!("Alert sent via ALERT_COMMAND: {}", alert.subject),
            Err(error) => tracing::error!("Alert command `{command}` failed: {error}"),
        }
    }
    if let Some(to) = &config.alert_email_to {
        let from = config
            .alert_email_from
            .clone()
            .unwrap_or_else(|| format!("relay-sync@{host}"));
        let relay = format!("{}:{}", config.alert_smtp_host, config.alert_smtp_port);
        match send_mail(config, &from, to, alert) {
            Ok(()) => tracing::info!("Alert mailed to {to} via {relay}: {}", alert.subject),
            Err(error) => tracing::error!("Alert mail to {to} via {relay} failed: {error}"),
        }
    }
}

/// Runs `ALERT_COMMAND` with the message on stdin, bounded by `COMMAND_TIMEOUT` like every
/// command. The runner keeps relay-sync's own `RELAY_SYNC_*` variables (the password among
/// them) out of its environment; the two below are the ones it is meant to see.
fn run_command(command: &str, alert: &Alert, timeout: Duration) -> Result<(), String> {
    let output = relay_process::Command::shell(command)
        .stdin(alert.body.as_bytes())
        .env("RELAY_SYNC_ALERT_SEVERITY", alert.severity.as_str())
        .env("RELAY_SYNC_ALERT_SUBJECT", alert.subject.as_str())
        .timeout(timeout)
        .run()
        .map_err(|error| match error {
            // The caller names the command; say only what happened to it.
            relay_process::RunError::Timeout { after, .. } => format!(
                "still running after {}s (COMMAND_TIMEOUT); its process group was killed",
                after.as_secs_f64()
            ),
            relay_process::RunError::Spawn { source, .. } => {
                format!("cannot start /bin/sh: {source}")
            }
            other => other.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            output.status,
            relay_process::excerpt(&String::from_utf8_lossy(&output.stderr))
        ))
    }
}

fn send_mail(config: &Config, from: &str, to: &str, alert: &Alert) -> Result<(), String> {
    let from: Mailbox = from
        .parse()
        .map_err(|e| format!("ALERT_EMAIL_FROM {from:?}: {e}"))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("ALERT_EMAIL_TO {to:?}: {e}"))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(&alert.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(alert.body.clone())
        .map_err(|e| e.to_string())?;
    // Plain SMTP to the configured relay (localhost by default, or the mailbox host over the
    // VPN): alert mail must not depend on a certificate store being right at 3 a.m.
    let mailer = SmtpTransport::builder_dangerous(&config.alert_smtp_host)
        .port(config.alert_smtp_port)
        .timeout(Some(SMTP_TIMEOUT))
        .build();
    mailer.send(&message).map(|_| ()).map_err(|e| e.to_string())
}
