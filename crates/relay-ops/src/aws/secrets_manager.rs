//! `DB_PASSWORD_SECRET`: the database password read from AWS Secrets Manager
//! (`GetSecretValue`: the `AWSCURRENT` version, or `AWSPENDING` while a rotation is under way)
//! with AWS's own SDK and credential chain, so the gateway needs no `aws` CLI. What the secret's text means (plain, or RDS-style JSON) is
//! `crate::password`'s to say; this module only fetches it.
//!
//! The value never leaves this module but as a [`Secret`], whose `Debug` hides it; no error
//! holds it (the SDK's errors do not, and the output's own `Debug` redacts it), and nothing
//! here logs.

use std::time::Duration;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use relay_db::Secret;

use super::{block_on, describe, redact, session, Call};
use crate::config::SecretSettings;
use crate::login::Stage;

/// The shipped policy that grants what the gateway's role needs to read the secret.
pub(crate) const POLICY: &str = "secret-policy.json";

/// One secret's current value, as Secrets Manager returned it.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// `SecretString`.
    pub(crate) value: Secret,
    /// The secret's full ARN, as Secrets Manager names it (for `check`).
    pub(crate) arn: String,
}

/// Reads the version `stage` labels of the secret `settings` names, bounded as a whole by
/// `timeout` (`COMMAND_TIMEOUT`), credential lookup included; `None` when the secret has no
/// `AWSPENDING` version. The error says what went wrong and, for a denial, which IAM action the
/// gateway's role lacks.
pub(crate) fn fetch(
    settings: &SecretSettings,
    timeout: Duration,
    stage: Stage,
) -> Result<Option<Fetched>, String> {
    block_on(async {
        let endpoint = settings.endpoint.clone();
        let work = async {
            let session = session(settings.region.as_deref(), timeout).await?;
            let region = session
                .sdk
                .region()
                .map(ToString::to_string)
                .ok_or_else(|| {
                    format!(
                        "no AWS region to find it in: set {} or give the secret's ARN (neither \
                     AWS_REGION, a profile nor instance metadata named one)",
                        crate::config::NAME.db_password_secret_region
                    )
                })?;
            let endpoint = endpoint.unwrap_or_else(|| format!("Secrets Manager in {region}"));
            let mut config = aws_sdk_secretsmanager::config::Builder::from(&session.sdk)
                .credentials_provider(session.credentials.clone());
            if let Some(url) = &settings.endpoint {
                config = config.endpoint_url(url);
            }
            let client = aws_sdk_secretsmanager::Client::from_conf(config.build());
            let call = Call {
                action: "secretsmanager:GetSecretValue",
                resource: &settings.id,
                policy: POLICY,
                endpoint: &endpoint,
                timeout,
            };
            let mut request = client.get_secret_value().secret_id(&settings.id);
            if stage == Stage::Pending {
                request = request.version_stage("AWSPENDING");
            }
            let output = match request.send().await {
                Ok(output) => output,
                // No rotation under way: nothing pending to try.
                Err(error)
                    if stage == Stage::Pending
                        && error.as_service_error().and_then(|e| e.code())
                            == Some("ResourceNotFoundException") =>
                {
                    return Ok(None);
                }
                Err(error) => return Err(redact(explain(&error, &call), &session.credentials)),
            };
            let arn = output.arn().unwrap_or(&settings.id).to_owned();
            match output.secret_string() {
                Some(value) => Ok(Some(Fetched {
                    value: Secret::new(value),
                    arn,
                })),
                None => Err(
                    "it holds a binary secret (SecretBinary); relay-sync reads a text one \
                     (SecretString): the password, or JSON with \"password\""
                        .to_owned(),
                ),
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                let endpoint = settings
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "Secrets Manager".to_owned());
                Err(Call {
                    action: "",
                    resource: &settings.id,
                    policy: POLICY,
                    endpoint: &endpoint,
                    timeout,
                }
                .no_answer())
            })
    })?
}

/// What Secrets Manager's answer means for the operator: besides what every AWS call shares,
/// a denial that comes from KMS names `kms:Decrypt`, the action a secret encrypted with a
/// customer managed key also needs.
fn explain<E, R>(error: &SdkError<E, R>, call: &Call<'_>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    describe(error, call, |code, message| {
        let kms = "access denied: the gateway's role needs kms:Decrypt on the KMS key that \
                   encrypts the secret (a customer managed key; see \
                   /usr/share/relay-sync/secret-policy.json)";
        match code {
            "AccessDeniedException" if message.to_ascii_lowercase().contains("kms") => {
                Some(format!("{kms}: {message}"))
            }
            "DecryptionFailure" => Some(format!(
                "Secrets Manager cannot decrypt it with its KMS key (the role needs kms:Decrypt \
                 on that key, and the key must be enabled): {message}"
            )),
            "ResourceNotFoundException" => Some(format!(
                "no such secret {} at {}: {message}",
                call.resource, call.endpoint
            )),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    /// The policy shipped for the gateway's role allows exactly what reading the secret needs:
    /// `GetSecretValue` on the secret, and `kms:Decrypt` only through Secrets Manager (for a
    /// customer managed key), nothing more.
    #[test]
    fn the_shipped_iam_policy_allows_what_is_called() {
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../../../../packaging/secret-policy.json"))
                .expect("packaging/secret-policy.json is JSON");
        let statements = policy["Statement"].as_array().expect("a Statement list");
        assert_eq!(statements.len(), 2);
        assert!(statements.iter().all(|s| s["Effect"] == "Allow"));
        assert_eq!(statements[0]["Action"], "secretsmanager:GetSecretValue");
        assert!(statements[0]["Resource"]
            .as_str()
            .is_some_and(|arn| arn.starts_with("arn:aws:secretsmanager:")));
        assert_eq!(statements[1]["Action"], "kms:Decrypt");
        assert_eq!(
            statements[1]["Condition"]["StringEquals"]["kms:ViaService"],
            "secretsmanager.REGION.amazonaws.com"
        );
    }
}
