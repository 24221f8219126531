//! Alerts published to an Amazon SNS topic (`ALERT_SNS_TOPIC_ARN`), with AWS's own SDK: SigV4
//! signing and the credential chain (environment, ECS container credentials, IMDSv2, profiles)
//! are AWS's code, not ours.
//!
//! relay-ops runs its work synchronously on a blocking thread, so each call starts a small
//! current-thread runtime of its own and drops it before returning; nothing AWS-related outlives
//! the call (no connection pool, no runtime an embedder could drop in the wrong place). Alerts
//! are rare, and the credentials are resolved once per call and handed to the client as they
//! are, so one publish costs one credential lookup.
//!
//! Every call is bounded as a whole by `COMMAND_TIMEOUT`, credential lookup included, and the
//! connection by [`CONNECT_TIMEOUT`] (or less). The SDK does not retry: the outbox offers an
//! undelivered alert again on every later run, and a retry inside the call would only stretch
//! the one bound the run has. For the same reason, once the endpoint has not answered (or
//! could not be reached), the sink does not try again for [`HOLD_OFF`]: a run with twenty
//! alerts queued waits for one timeout, not twenty, and they wait in the outbox instead.
//!
//! Nothing here logs, and every error text has every part of the credentials removed: no
//! credential reaches a log line, an error or `status`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sns::config::{Credentials, ProvideCredentials};
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::AlertSink;
use crate::check::{CheckId, Level};
use crate::config::SnsSettings;
use crate::failures::Alert;

/// The longest a connection to SNS may take to open, when `COMMAND_TIMEOUT` is longer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// What `check` reports about SNS: whether credentials resolve (`sns_credentials`) and whether
/// the topic answers `GetTopicAttributes` (`sns_topic`), each bounded by `timeout`.
pub(crate) fn probe(settings: &SnsSettings, timeout: Duration) -> Vec<(CheckId, Level, String)> {
    let outcome = block_on(async {
        let mut items = Vec::new();
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
                items.push((CheckId::SnsCredentials, Level::Fail, error));
                return items;
            }
        };
        items.push((
            CheckId::SnsCredentials,
            Level::Ok,
            "resolved from AWS's standard chain".to_owned(),
        ));
        let call = client
            .get_topic_attributes()
            .topic_arn(&settings.topic_arn)
            .send();
        let item = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => (
                Level::Ok,
                format!(
                    "{} reachable via {}; sns:Publish is not tried (it would send a message)",
                    settings.topic_arn,
                    endpoint_name(settings)
                ),
            ),
            Ok(Err(error)) => (
                Level::Fail,
                redact(
                    describe(&error, "sns:GetTopicAttributes", settings, timeout),
                    &credentials,
                ),
            ),
            Err(_) => (Level::Fail, no_answer(settings, timeout)),
        };
        items.push((CheckId::SnsTopic, item.0, item.1));
        items
    });
    outcome.unwrap_or_else(|error| vec![(CheckId::SnsCredentials, Level::Fail, error)])
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

/// Runs `work` to completion on a current-thread runtime of its own. On a thread that already
/// belongs to a runtime (an embedder calling from async code), `block_on` would panic, so the
/// runtime then runs on a thread of its own.
fn block_on<T: Send>(work: impl Future<Output = T> + Send) -> Result<T, String> {
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(work))
            .map_err(|error| format!("cannot start the async runtime: {error}"))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("relay-sync-sns".to_owned())
            .spawn_scoped(scope, run)
            .map_err(|error| format!("cannot start a thread for SNS: {error}"))?
            .join()
            .unwrap_or_else(|_| Err("the SNS call panicked".to_owned()))
    })
}

/// The SNS client for `settings`, with the credentials the standard chain resolved now.
async fn connect(
    settings: &SnsSettings,
    timeout: Duration,
) -> Result<(aws_sdk_sns::Client, Credentials), String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .operation_timeout(timeout)
        .build();
    // The loader's own providers (IMDSv2, ECS container credentials, STS for web identity)
    // use this client and these bounds too; the endpoint override is SNS's alone.
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    let provider = sdk.credentials_provider().ok_or_else(|| {
        "no AWS credential provider is configured (this is a bug in relay-sync)".to_owned()
    })?;
    let credentials = provider.provide_credentials().await.map_err(|error| {
        one_line(&format!(
            "no AWS credentials from the standard chain (environment, ECS container \
             credentials, instance profile, profiles): {}",
            DisplayErrorContext(&error)
        ))
    })?;
    let mut config =
        aws_sdk_sns::config::Builder::from(&sdk).credentials_provider(credentials.clone());
    if let Some(endpoint) = &settings.endpoint {
        config = config.endpoint_url(endpoint);
    }
    Ok((aws_sdk_sns::Client::from_conf(config.build()), credentials))
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
    format!(
        "no answer from {} within {}s (COMMAND_TIMEOUT); abandoned",
        endpoint_name(settings),
        timeout.as_secs_f64()
    )
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
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::TimeoutError(_) => no_answer(settings, timeout),
        SdkError::DispatchFailure(_) => format!(
            "cannot reach {}: {}",
            endpoint_name(settings),
            DisplayErrorContext(error)
        ),
        SdkError::ServiceError(_) => {
            let message = error.message().unwrap_or("no message");
            match error.code() {
                Some("AuthorizationError" | "AccessDenied" | "AccessDeniedException") => format!(
                    "access denied: the gateway's role needs {action} on {} (see \
                     /usr/share/relay-sync/sns-policy.json): {message}",
                    settings.topic_arn
                ),
                Some(
                    code @ ("InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "IncompleteSignature"
                    | "ExpiredToken"
                    | "UnrecognizedClientException"),
                ) => format!("the credentials were refused ({code}): {message}"),
                Some("NotFound") => format!("no such topic {}: {message}", settings.topic_arn),
                Some(code) => format!("{action} failed ({code}): {message}"),
                None => format!(
                    "{action} failed at {}: {}",
                    endpoint_name(settings),
                    DisplayErrorContext(error)
                ),
            }
        }
        _ => format!(
            "{action} failed at {}: {}",
            endpoint_name(settings),
            DisplayErrorContext(error)
        ),
    }
}

/// `text` on one line: the SDK's chain errors list each provider on a line of its own, and a
/// log line or a `check` detail is one line.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// `text` on one line, with every part of `credentials` replaced by `[redacted]`. The SDK's
/// errors do not carry credentials; this keeps it so whatever a server echoes back.
fn redact(text: String, credentials: &Credentials) -> String {
    let text = one_line(&text);
    let secrets = [
        Some(credentials.secret_access_key()),
        credentials.session_token(),
        Some(credentials.access_key_id()),
    ];
    secrets
        .into_iter()
        .flatten()
        .filter(|secret| !secret.is_empty())
        .fold(text, |text, secret| text.replace(secret, "[redacted]"))
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

    #[test]
    fn errors_are_one_line() {
        assert_eq!(
            one_line("no credentials. Attempted:\n  Environment: not set\n\n  Profile: none\n"),
            "no credentials. Attempted: Environment: not set; Profile: none"
        );
    }

    #[test]
    fn redaction_removes_every_part_of_the_credentials() {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "s3cr3t/key", Some("tok3n".into()), None, "t");
        let text = redact(
            "key AKIDEXAMPLE secret s3cr3t/key token tok3n end".to_owned(),
            &credentials,
        );
        assert_eq!(
            text,
            "key [redacted] secret [redacted] token [redacted] end"
        );
    }
}
