//! A stand-in for AWS Secrets Manager on 127.0.0.1: it checks each request's SigV4 signature
//! against the test credentials it was given (the check shared with the SNS stand-in, in
//! `aws`), answers `GetSecretValue` from the secrets it holds as Secrets Manager's JSON
//! protocol does, records every request, and fails on purpose ([`Behaviour`]): a role without
//! `secretsmanager:GetSecretValue`, or without `kms:Decrypt` on a customer managed key.
//!
//! A secret is found by its name, its full ARN or its ARN without the random suffix, as
//! Secrets Manager finds it. Each [`SecretsManagerStandIn::put_secret`] makes a new current
//! version (`AWSCURRENT`); a rotation caught half-way is [`SecretsManagerStandIn::put_pending`]
//! (an `AWSPENDING` version) and [`SecretsManagerStandIn::finish_rotation`] (it becomes
//! current), as a rotation function's `createSecret` and `finishSecret` steps do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::aws::{lock, Answer, Request, Server, Signing};

/// The account in the stand-in's ARNs.
pub const ACCOUNT: &str = "123456789012";

/// The six characters Secrets Manager appends to a secret's name in its ARN (random there).
const ARN_SUFFIX: &str = "-Rs7e5t";

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Like Secrets Manager for a caller allowed everything.
    Accept,
    /// `AccessDeniedException` naming `secretsmanager:GetSecretValue`, as Secrets Manager
    /// answers a role without it.
    DenyGetSecretValue,
    /// `AccessDeniedException: Access to KMS is not allowed`, as Secrets Manager answers a role
    /// that may read the secret but not decrypt it with its customer managed key.
    DenyKms,
    /// `500 InternalServiceError` to every request.
    Fail500,
    /// Reads the request and never answers (until the stand-in is dropped).
    Hang,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The operation, from `X-Amz-Target` (e.g. `GetSecretValue`).
    pub action: String,
    /// The `SecretId` asked for.
    pub secret_id: String,
    /// The `VersionStage` asked for, if any (`AWSCURRENT` when none).
    pub version_stage: Option<String>,
    /// `None` when the signature checked out, or why it did not.
    pub signature_problem: Option<String>,
    /// How it was answered.
    pub behaviour: Behaviour,
}

/// One secret's values.
#[derive(Debug, Default)]
struct Versions {
    /// Every value it was given as current, the current one last.
    current: Vec<String>,
    /// The value labelled `AWSPENDING`, while a rotation is under way.
    pending: Option<String>,
}

#[derive(Debug)]
struct Shared {
    region: String,
    behaviour: Mutex<Behaviour>,
    /// Each secret by its name.
    secrets: Mutex<BTreeMap<String, Versions>>,
    seen: Mutex<Vec<Seen>>,
}

/// The stand-in Secrets Manager endpoint; stops when dropped.
#[derive(Debug)]
pub struct SecretsManagerStandIn {
    shared: Arc<Shared>,
    server: Server,
}

impl SecretsManagerStandIn {
    /// Listens on a free port of 127.0.0.1, accepting requests signed with these credentials
    /// for `region`; it holds no secret yet.
    pub fn start(
        access_key_id: &str,
        secret_access_key: &str,
        region: &str,
    ) -> Result<SecretsManagerStandIn> {
        let shared = Arc::new(Shared {
            region: region.to_owned(),
            behaviour: Mutex::new(Behaviour::Accept),
            secrets: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(Vec::new()),
        });
        let signing = Signing::new(access_key_id, secret_access_key, region, "secretsmanager");
        let server = Server::start(signing, &shared, serve)?;
        Ok(SecretsManagerStandIn { shared, server })
    }

    /// The endpoint URL, for `DB_PASSWORD_SECRET_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// The ARN of the secret `name`, as Secrets Manager shows it (with its random suffix).
    pub fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:secretsmanager:{}:{ACCOUNT}:secret:{name}{ARN_SUFFIX}",
            self.shared.region
        )
    }

    /// Makes `value` the current version of the secret `name` (`SecretString`), creating the
    /// secret if needed; returns its ARN.
    pub fn put_secret(&self, name: &str, value: &str) -> String {
        lock(&self.shared.secrets)
            .entry(name.to_owned())
            .or_default()
            .current
            .push(value.to_owned());
        self.arn(name)
    }

    /// Gives the secret `name` an `AWSPENDING` version holding `value`, as a rotation's
    /// `createSecret` step does; the current version stays current.
    pub fn put_pending(&self, name: &str, value: &str) {
        lock(&self.shared.secrets)
            .entry(name.to_owned())
            .or_default()
            .pending = Some(value.to_owned());
    }

    /// Makes the `AWSPENDING` version of `name` current, as a rotation's `finishSecret` step
    /// does.
    pub fn finish_rotation(&self, name: &str) {
        let mut secrets = lock(&self.shared.secrets);
        let versions = secrets.entry(name.to_owned()).or_default();
        if let Some(pending) = versions.pending.take() {
            versions.current.push(pending);
        }
    }

    /// Changes how later requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }
}

/// One request, in Secrets Manager's JSON protocol (`awsJson1_1`).
fn serve(request: &Request, shared: &Shared) -> Answer {
    let action = request
        .header("x-amz-target")
        .and_then(|target| target.strip_prefix("secretsmanager."))
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value =
        serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null);
    let secret_id = body["SecretId"].as_str().unwrap_or_default().to_owned();
    let version_stage = body["VersionStage"].as_str().map(str::to_owned);
    let behaviour = *lock(&shared.behaviour);
    lock(&shared.seen).push(Seen {
        action: action.clone(),
        secret_id: secret_id.clone(),
        version_stage: version_stage.clone(),
        signature_problem: request.signature_problem.clone(),
        behaviour,
    });
    if let Some(problem) = &request.signature_problem {
        return error(400, "InvalidSignatureException", problem);
    }
    match behaviour {
        Behaviour::Hang => Answer::Hang,
        Behaviour::Fail500 => error(500, "InternalServiceError", "the stand-in fails on purpose"),
        Behaviour::DenyGetSecretValue => error(
            400,
            "AccessDeniedException",
            &format!(
                "User: arn:aws:sts::{ACCOUNT}:assumed-role/relay-sync-gateway/i-0123456789abcdef0 \
                 is not authorized to perform: secretsmanager:{action} on resource: {secret_id} \
                 because no identity-based policy allows the secretsmanager:{action} action"
            ),
        ),
        Behaviour::DenyKms => error(400, "AccessDeniedException", "Access to KMS is not allowed"),
        Behaviour::Accept if action == "GetSecretValue" => {
            get_secret_value(shared, &secret_id, version_stage.as_deref())
        }
        Behaviour::Accept => error(
            400,
            "InvalidRequestException",
            &format!("the stand-in does not do {action:?}"),
        ),
    }
}

/// `GetSecretValue`: the version of the secret `secret_id` names that `stage` labels
/// (`AWSCURRENT` when `None`).
fn get_secret_value(shared: &Shared, secret_id: &str, stage: Option<&str>) -> Answer {
    let arn_prefix = format!("arn:aws:secretsmanager:{}:{ACCOUNT}:secret:", shared.region);
    let name = secret_id
        .strip_prefix(&arn_prefix)
        .map_or(secret_id, |name| {
            name.strip_suffix(ARN_SUFFIX).unwrap_or(name)
        });
    let secrets = lock(&shared.secrets);
    let Some(versions) = secrets.get(name) else {
        return error(
            400,
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        );
    };
    let (value, number) = match stage.unwrap_or("AWSCURRENT") {
        "AWSCURRENT" => (versions.current.last(), versions.current.len()),
        "AWSPENDING" => (versions.pending.as_ref(), versions.current.len() + 1),
        _ => (None, 0),
    };
    let Some(value) = value else {
        return error(
            400,
            "ResourceNotFoundException",
            &format!(
                "Secrets Manager can't find the specified secret value for staging label: {}",
                stage.unwrap_or("AWSCURRENT")
            ),
        );
    };
    let answer = serde_json::json!({
        "ARN": format!("{arn_prefix}{name}{ARN_SUFFIX}"),
        "Name": name,
        "VersionId": format!("00000000-0000-0000-0000-{number:012}"),
        "SecretString": value,
        "VersionStages": [stage.unwrap_or("AWSCURRENT")],
        "CreatedDate": 1_700_000_000.0,
    });
    json(200, answer.to_string())
}

fn json(status: u16, body: String) -> Answer {
    Answer::Respond {
        status,
        content_type: "application/x-amz-json-1.1",
        body,
    }
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    json(
        status,
        serde_json::json!({ "__type": code, "message": message }).to_string(),
    )
}
