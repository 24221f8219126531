//! What relay-sync's AWS clients share (SNS alerts in `alert::sns`, the database password from
//! Secrets Manager in [`secrets_manager`]): AWS's own SDK, so that SigV4 signing and the
//! credential chain (environment, ECS container credentials, IMDSv2, profiles) are AWS's code,
//! not ours.
//!
//! relay-ops runs its work synchronously on a blocking thread, so each call starts a small
//! current-thread runtime of its own and drops it before returning ([`block_on`]); nothing
//! AWS-related outlives the call (no connection pool, no runtime an embedder could drop in the
//! wrong place). The credentials are resolved once per call and handed to the client as they
//! are ([`session`]), so one call costs one credential lookup.
//!
//! Every call is bounded as a whole by `COMMAND_TIMEOUT` (the caller's `tokio::time::timeout`),
//! credential lookup included, and the connection by [`CONNECT_TIMEOUT`] (or less). The SDK
//! does not retry: a retry inside the call would only stretch the one bound the run has.
//!
//! Nothing here logs but the credential chain's own account of a failure (DEBUG, with
//! `--verbose`: it holds no credential, there being none), and every error text has every part of the credentials removed
//! ([`redact`]): no credential reaches a log line, an error or `status`.

pub(crate) mod secrets_manager;

use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sns::config::{Credentials, ProvideCredentials};
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The longest a connection to an AWS endpoint may take to open, when `COMMAND_TIMEOUT` is
/// longer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `work` to completion on a current-thread runtime of its own. On a thread that already
/// belongs to a runtime (an embedder calling from async code), `block_on` would panic, so the
/// runtime then runs on a thread of its own.
pub(crate) fn block_on<T: Send>(work: impl Future<Output = T> + Send) -> Result<T, String> {
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
            .name("relay-sync-aws".to_owned())
            .spawn_scoped(scope, run)
            .map_err(|error| format!("cannot start a thread for AWS: {error}"))?
            .join()
            .unwrap_or_else(|_| Err("the AWS call panicked".to_owned()))
    })
}

/// The SDK's shared configuration and the credentials the standard chain resolved for one
/// call: each client is built from `sdk` with `credentials` as they are.
pub(crate) struct Session {
    /// Region, HTTPS client, timeouts, no retries.
    pub(crate) sdk: SdkConfig,
    /// What the standard chain resolved, kept for [`redact`].
    pub(crate) credentials: Credentials,
}

/// Loads the SDK's configuration for `region` (AWS's standard region chain when `None`: the
/// environment, profiles, instance metadata) with relay-sync's HTTPS client and bounds, and
/// resolves the credentials once.
pub(crate) async fn session(region: Option<&str>, timeout: Duration) -> Result<Session, String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .operation_timeout(timeout)
        .build();
    // The loader's own providers (IMDSv2, ECS container credentials, STS for web identity)
    // use this client and these bounds too; an endpoint override is each service's alone.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::disabled());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let sdk = loader.load().await;
    let provider = sdk.credentials_provider().ok_or_else(|| {
        "no AWS credential provider is configured (this is a bug in relay-sync)".to_owned()
    })?;
    let credentials = provider.provide_credentials().await.map_err(|error| {
        // What each source of the chain said is a paragraph (a timeout from instance
        // metadata, an empty profile file, …): for `--verbose`, not for every log line.
        tracing::debug!(
            "what each source of AWS's credential chain said: {}",
            one_line(&DisplayErrorContext(&error).to_string())
        );
        "no AWS credentials: none of the standard chain's sources (environment, ECS container \
         credentials, instance profile, profiles) gave any; `relay-sync -v check` shows what \
         each said"
            .to_owned()
    })?;
    Ok(Session { sdk, credentials })
}

/// One call to an AWS service, for the messages [`describe`] writes.
pub(crate) struct Call<'a> {
    /// The IAM action it needs, e.g. `sns:Publish`.
    pub(crate) action: &'a str,
    /// What it acts on: a topic's ARN, a secret's ARN or name.
    pub(crate) resource: &'a str,
    /// The shipped policy that grants the action, e.g. `sns-policy.json`.
    pub(crate) policy: &'a str,
    /// Where the call went: an endpoint URL, or `SNS in eu-central-1`.
    pub(crate) endpoint: &'a str,
    /// `COMMAND_TIMEOUT`.
    pub(crate) timeout: Duration,
}

impl Call<'_> {
    /// The error for a call that did not finish within its timeout.
    pub(crate) fn no_answer(&self) -> String {
        format!(
            "no answer from {} within {}s (COMMAND_TIMEOUT); abandoned",
            self.endpoint,
            self.timeout.as_secs_f64()
        )
    }
}

/// What went wrong with `call`, in the operator's words: a denial names the IAM action the
/// gateway's role lacks and the shipped policy that grants it. `specific` sees each service
/// error's code and message first, for what only one service answers.
pub(crate) fn describe<E, R>(
    error: &SdkError<E, R>,
    call: &Call<'_>,
    specific: impl FnOnce(&str, &str) -> Option<String>,
) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let Call {
        action,
        resource,
        policy,
        endpoint,
        ..
    } = call;
    match error {
        SdkError::TimeoutError(_) => call.no_answer(),
        SdkError::DispatchFailure(_) => {
            format!("cannot reach {endpoint}: {}", DisplayErrorContext(error))
        }
        SdkError::ServiceError(_) => {
            let message = error.message().unwrap_or("no message");
            let Some(code) = error.code() else {
                return format!(
                    "{action} failed at {endpoint}: {}",
                    DisplayErrorContext(error)
                );
            };
            if let Some(text) = specific(code, message) {
                return text;
            }
            match code {
                "AuthorizationError" | "AccessDenied" | "AccessDeniedException" => format!(
                    "access denied: the gateway's role needs {action} on {resource} (see \
                     /usr/share/relay-sync/{policy}): {message}"
                ),
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "UnrecognizedClientException" => {
                    format!("the credentials were refused ({code}): {message}")
                }
                code => format!("{action} failed ({code}): {message}"),
            }
        }
        _ => format!(
            "{action} failed at {endpoint}: {}",
            DisplayErrorContext(error)
        ),
    }
}

/// `text` on one line: the SDK's chain errors list each provider on a line of its own, and a
/// log line or a `check` detail is one line.
pub(crate) fn one_line(text: &str) -> String {
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
pub(crate) fn redact(text: String, credentials: &Credentials) -> String {
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
