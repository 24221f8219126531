//! Alerts published to an Amazon SNS topic (`ALERT_SNS_TOPIC_ARN`), with AWS's own SDK (see
//! `crate::aws` for what every AWS call shares: its own small runtime, one credential lookup,
//! the `COMMAND_TIMEOUT` bound, no retries, errors without credentials).
//!
//! The outbox offers an undelivered alert again on every later run, so once the endpoint has
//! not answered (or could not be reached), the sink does not try again for [`HOLD_OFF`]: a run
//! with twenty alerts queued waits for one timeout, not twenty, and they wait in the outbox
//! instead.
//!
//! Nothing here logs, and every error text has every part of the credentials removed: no
//! credential reaches a log line, an error or `status`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sns::config::Credentials;
use aws_sdk_sns::error::SdkError;
use aws_sdk_sns::types::MessageAttributeValue;

use super::AlertSink;
use crate::aws::{self, block_on, redact, Call};
use crate::config::SnsSettings;
use crate::failures::Alert;

pub use crate::aws::CONNECT_TIMEOUT;

/// How long after the endpoint failed to answer the sink does not try it again.
pub const HOLD_OFF: Duration = Duration::from_secs(60);

/// SNS's limit on a subject: 100 ASCII characters.
const SUBJECT_MAX: usize = 100;

/// The message attribute that carries the alert's severity (`critical`, `warning`,
/// `recovery`), for subscription filter policies.
pub const SEVERITY_ATTRIBUTE: &str = "severity";

/// The message attribute that carries the gateway's host name.
pub const HOST_ATTRIBUTE: &str = "host";

/// `ALERT_SNS_TOPIC_ARN`: each alert published to the topic, its subject shortened to what SNS
/// accepts ([`sns_subject`]), its text as the message, and its severity and this host's name as
/// the message attributes [`SEVERITY_ATTRIBUTE`] and [`HOST_ATTRIBUTE`].
#[derive(Debug, Clone)]
pub struct SnsSink {
    settings: SnsSettings,
    host: String,
    timeout: Duration,
    /// When the endpoint last failed to answer, for [`HOLD_OFF`].
    unreachable_at: Arc<Mutex<Option<Instant>>>,
}

impl SnsSink {
    /// A sink publishing to `settings`' topic as `host`, each publish bounded by `timeout`
    /// (`COMMAND_TIMEOUT`), credential lookup included.
    pub fn new(settings: SnsSettings, host: impl Into<String>, timeout: Duration) -> SnsSink {
        SnsSink {
            settings,
            host: host.into(),
            timeout,
            unreachable_at: Arc::new(Mutex::new(None)),
        }
    }

    /// `Some(error)` while the endpoint's last failure to answer is less than [`HOLD_OFF`] ago.
    fn held_off(&self) -> Option<String> {
        let at = (*self
            .unreachable_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))?;
        let ago = at.elapsed();
        (ago < HOLD_OFF).then(|| {
            format!(
                "not tried: {} did not answer {}s ago; the alert waits for a later run",
                endpoint_name(&self.settings),
                ago.as_secs()
            )
        })
    }

    /// Remembers whether the endpoint answered, for [`HOLD_OFF`].
    fn answered(&self, answered: bool) {
        *self
            .unreachable_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (!answered).then(Instant::now);
    }
}

impl AlertSink for SnsSink {
    fn sent(&self) -> String {
        format!("Alert published to SNS topic {}", self.settings.topic_arn)
    }

    fn failed(&self) -> String {
        format!("Alert to SNS topic {} failed", self.settings.topic_arn)
    }

    fn send(&self, alert: &Alert) -> Result<(), String> {
        if let Some(error) = self.held_off() {
            return Err(error);
        }
        let settings = &self.settings;
        // The error, and whether the endpoint answered (for HOLD_OFF).
        let outcome: Result<(), (String, bool)> = block_on(async {
            let work = async {
                let (client, credentials) = connect(settings, self.timeout)
                    .await
                    .map_err(|error| (error, true))?;
                let attribute = |value: &str| {
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()
                        .map_err(|error| {
                            (format!("cannot build a message attribute: {error}"), true)
                        })
                };
                client
                    .publish()
                    .topic_arn(&settings.topic_arn)
                    .subject(sns_subject(&alert.subject))
                    .message(&alert.body)
                    .message_attributes(SEVERITY_ATTRIBUTE, attribute(alert.severity.as_str())?)
                    .message_attributes(HOST_ATTRIBUTE, attribute(&self.host)?)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|error| {
                        let answered = !matches!(
                            error,
                            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
                        );
                        let text = describe(&error, "sns:Publish", settings, self.timeout);
                        (redact(text, &credentials), answered)
                    })
            };
            tokio::time::timeout(self.timeout, work)
                .await
                .unwrap_or_else(|_| Err((no_answer(settings, self.timeout), false)))
        })?;
        self.answered(
            outcome
                .as_ref()
                .map_or_else(|(_, answered)| *answered, |()| true),
        );
        outcome.map_err(|(error, _)| error)
    }
}

/// What SNS answered [`probe`]: each part is what was found, or why it failed.
#[derive(Debug)]
pub(crate) struct Probe {
    /// Whether credentials resolve from AWS's standard chain.
    pub(crate) credentials: Result<String, String>,
    /// Whether the topic answers `GetTopicAttributes`; `None` when there were no credentials
    /// to ask with.
    pub(crate) topic: Option<Result<String, String>>,
}

/// Asks SNS what `check` reports: whether credentials resolve, and whether the topic answers
/// `GetTopicAttributes` (which sends nothing), each bounded by `timeout`.
pub(crate) fn probe(settings: &SnsSettings, timeout: Duration) -> Probe {
    let outcome = block_on(async {
        let connected = tokio::time::timeout(timeout, connect(settings, timeout))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no credentials from AWS's standard chain within {}s (COMMAND_TIMEOUT)",
                    timeout.as_secs_f64()
                ))
            });
        let (client, credentials) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                return Probe {
                    credentials: Err(error),
                    topic: None,
                }
            }
        };
        let call = client
            .get_topic_attributes()
            .topic_arn(&settings.topic_arn)
            .send();
        let topic = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => Ok(format!(
                "{} reachable via {}; sns:Publish is not tried (it would send a message)",
                settings.topic_arn,
                endpoint_name(settings)
            )),
            Ok(Err(error)) => Err(redact(
                describe(&error, "sns:GetTopicAttributes", settings, timeout),
                &credentials,
            )),
            Err(_) => Err(no_answer(settings, timeout)),
        };
        Probe {
            credentials: Ok("resolved from AWS's standard chain".to_owned()),
            topic: Some(topic),
        }
    });
    outcome.unwrap_or_else(|error| Probe {
        credentials: Err(error),
        topic: None,
    })
}

/// The subject SNS accepts: ASCII without control characters, at most 100 characters, not
/// empty. Anything else is replaced (`?`, a space) and a longer subject is cut with `...`: an
/// alert is never refused for its subject.
pub fn sns_subject(subject: &str) -> String {
    let ascii: String = subject
        .chars()
        .map(|c| match c {
            c if c.is_ascii_control() || c.is_whitespace() => ' ',
            c if c.is_ascii() => c,
            _ => '?',
        })
        .collect();
    let ascii = ascii.trim();
    if ascii.is_empty() {
        return "relay-sync alert".to_owned();
    }
    if ascii.len() <= SUBJECT_MAX {
        return ascii.to_owned();
    }
    // All ASCII by now, so every byte index is a character boundary.
    format!("{}...", ascii[..SUBJECT_MAX - 3].trim_end())
}

/// The SNS client for `settings`, with the credentials the standard chain resolved now.
async fn connect(
    settings: &SnsSettings,
    timeout: Duration,
) -> Result<(aws_sdk_sns::Client, Credentials), String> {
    let session = aws::session(Some(&settings.region), timeout).await?;
    let mut config = aws_sdk_sns::config::Builder::from(&session.sdk)
        .credentials_provider(session.credentials.clone());
    if let Some(endpoint) = &settings.endpoint {
        config = config.endpoint_url(endpoint);
    }
    Ok((
        aws_sdk_sns::Client::from_conf(config.build()),
        session.credentials,
    ))
}

/// Where the calls go, for messages.
fn endpoint_name(settings: &SnsSettings) -> String {
    match &settings.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => format!("SNS in {}", settings.region),
    }
}

/// The error for a call that did not finish within `timeout`.
fn no_answer(settings: &SnsSettings, timeout: Duration) -> String {
    call("", settings, &endpoint_name(settings), timeout).no_answer()
}

/// `action` on the topic, for [`aws::describe`].
fn call<'a>(
    action: &'a str,
    settings: &'a SnsSettings,
    endpoint: &'a str,
    timeout: Duration,
) -> Call<'a> {
    Call {
        action,
        resource: &settings.topic_arn,
        policy: "sns-policy.json",
        endpoint,
        timeout,
    }
}

/// What went wrong with `action`, in the operator's words: a denial names the IAM action the
/// gateway's role lacks.
fn describe<E, R>(
    error: &SdkError<E, R>,
    action: &str,
    settings: &SnsSettings,
    timeout: Duration,
) -> String
where
    E: aws_sdk_sns::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let endpoint = endpoint_name(settings);
    aws::describe(
        error,
        &call(action, settings, &endpoint, timeout),
        |code, message| {
            (code == "NotFound").then(|| format!("no such topic {}: {message}", settings.topic_arn))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_ascii_and_at_most_100_characters() {
        let cases = [
            (
                "relay-sync on mx1: recovered",
                "relay-sync on mx1: recovered",
            ),
            ("  tabs\tand\nbreaks  ", "tabs and breaks"),
            ("ünïcode on mx", "?n?code on mx"),
            ("", "relay-sync alert"),
            ("\n", "relay-sync alert"),
        ];
        for (subject, expected) in cases {
            assert_eq!(sns_subject(subject), expected, "{subject:?}");
        }
        let long = format!(
            "relay-sync on {}: 5 consecutive failed runs",
            "x".repeat(200)
        );
        let short = sns_subject(&long);
        assert_eq!(short.len(), 100, "{short}");
        assert!(short.ends_with("..."), "{short}");
        assert!(short.starts_with("relay-sync on xxx"), "{short}");
        let exactly = "y".repeat(100);
        assert_eq!(sns_subject(&exactly), exactly);
    }

    /// The policy shipped for the gateway's role allows exactly the two actions this module
    /// calls (`Publish` in `send`, `GetTopicAttributes` in `probe`), and nothing more.
    #[test]
    fn the_shipped_iam_policy_allows_what_is_called() {
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../../../../packaging/sns-policy.json"))
                .expect("packaging/sns-policy.json is JSON");
        let statements = policy["Statement"].as_array().expect("a Statement list");
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Effect"], "Allow");
        assert_eq!(
            statements[0]["Action"],
            serde_json::json!(["sns:Publish", "sns:GetTopicAttributes"])
        );
    }
}
