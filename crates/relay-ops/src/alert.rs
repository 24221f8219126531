//! Sending alerts (SPEC §7), behind [`AlertSink`]: `ALERT_COMMAND` ([`CommandSink`]), mail
//! ([`MailSink`]) and, in a build with the `aws` feature, an Amazon SNS topic (`SnsSink`) are
//! built from the config; an embedder may add its own. A failing alert is logged and never
//! changes the run's outcome.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::{Message, SmtpTransport, Transport};

use crate::config::Config;
use crate::failures::Alert;

#[cfg(feature = "aws")]
pub mod sns;

/// SMTP connect and command timeout.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Somewhere an alert can be delivered.
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    /// The log line's text for a delivered alert, e.g. `Alert sent via ALERT_COMMAND`.
    fn sent(&self) -> String;

    /// The log line's text for a failed delivery, before `: ERROR`, e.g.
    /// ``Alert command `notify.sh` failed``.
    fn failed(&self) -> String;

    /// Delivers `alert`, or says why it could not: a message for the log, never a secret.
    fn send(&self, alert: &Alert) -> Result<(), String>;
}

/// `ALERT_COMMAND`: run through `/bin/sh -c` with the alert's text on stdin and its severity
/// and subject in `RELAY_SYNC_ALERT_SEVERITY` and `RELAY_SYNC_ALERT_SUBJECT`, bounded like every
/// command. The runner keeps relay-sync's own `RELAY_SYNC_*` variables (the password among
/// them) out of its environment; those two are the ones it is meant to see.
#[derive(Debug, Clone)]
pub struct CommandSink {
    /// The shell command.
    pub command: String,
    /// How long it may run before its process group is killed (`COMMAND_TIMEOUT`).
    pub timeout: Duration,
}

impl AlertSink for CommandSink {
    fn sent(&self) -> String {
        "Alert sent via ALERT_COMMAND".to_owned()
    }

    fn failed(&self) -> String {
        format!("Alert command `{}` failed", self.command)
    }

    fn send(&self, alert: &Alert) -> Result<(), String> {
        let output = relay_process::Command::shell(&self.command)
            .stdin(alert.body.as_bytes())
            .env("RELAY_SYNC_ALERT_SEVERITY", alert.severity.as_str())
            .env("RELAY_SYNC_ALERT_SUBJECT", alert.subject.as_str())
            .timeout(self.timeout)
            .run()
            .map_err(|error| match error {
                // The log line names the command; say only what happened to it.
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
}

/// Mail through plain SMTP to a relay (`ALERT_EMAIL_TO`, `ALERT_SMTP_HOST`, …).
#[derive(Debug, Clone)]
pub struct MailSink {
    /// The recipient.
    pub to: String,
    /// The sender.
    pub from: String,
    /// The SMTP relay's host.
    pub host: String,
    /// The SMTP relay's port.
    pub port: u16,
}

impl AlertSink for MailSink {
    fn sent(&self) -> String {
        format!(
            "Alert mailed to {} via {}:{}",
            self.to, self.host, self.port
        )
    }

    fn failed(&self) -> String {
        format!(
            "Alert mail to {} via {}:{} failed",
            self.to, self.host, self.port
        )
    }

    fn send(&self, alert: &Alert) -> Result<(), String> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| format!("ALERT_EMAIL_FROM {:?}: {e}", self.from))?;
        let to: Mailbox = self
            .to
            .parse()
            .map_err(|e| format!("ALERT_EMAIL_TO {:?}: {e}", self.to))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(&alert.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(alert.body.clone())
            .map_err(|e| e.to_string())?;
        // Plain SMTP to the configured relay (localhost by default, or the mailbox host over the
        // VPN): alert mail must not depend on a certificate store being right at 3 a.m.
        let mailer = SmtpTransport::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        mailer.send(&message).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The sinks the config asks for: `ALERT_COMMAND` first, then mail, then SNS.
pub(crate) fn sinks_from_config(config: &Config, host: &str) -> Vec<Arc<dyn AlertSink>> {
    let mut sinks: Vec<Arc<dyn AlertSink>> = Vec::new();
    if let Some(command) = &config.alert_command {
        sinks.push(Arc::new(CommandSink {
            command: command.clone(),
            timeout: config.command_timeout,
        }));
    }
    if let Some(to) = &config.alert_email_to {
        sinks.push(Arc::new(MailSink {
            to: to.clone(),
            from: config
                .alert_email_from
                .clone()
                .unwrap_or_else(|| format!("relay-sync@{host}")),
            host: config.alert_smtp_host.clone(),
            port: config.alert_smtp_port,
        }));
    }
    // Without the feature, loading the config has refused ALERT_SNS_TOPIC_ARN.
    #[cfg(feature = "aws")]
    if let Some(settings) = &config.alert_sns {
        sinks.push(Arc::new(sns::SnsSink::new(
            settings.clone(),
            host,
            config.command_timeout,
        )));
    }
    sinks
}

/// Offers `alert` to `sink`, logging the success or the failure; `true` when it was taken.
pub(crate) fn send_one(sink: &dyn AlertSink, alert: &Alert) -> bool {
    match sink.send(alert) {
        Ok(()) => {
            tracing::info!("{}: {}", sink.sent(), alert.subject);
            true
        }
        Err(error) => {
            tracing::error!("{}: {error}", sink.failed());
            false
        }
    }
}
