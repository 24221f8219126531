//! The database login, and what a secret in AWS Secrets Manager gives.
//!
//! [`Config::resolve_login`](crate::Config::resolve_login) reads the password from its source
//! each time (the literal, the file, the command, the secret). A secret's text is the
//! password, or the JSON an RDS rotation writes (`{"username": …, "password": …}`, other fields
//! ignored): its `password`, and its `username` when `DB_USER` is not set
//! ([`login_from_secret`]). The text is never logged and never in an error.

use std::time::Duration;

use relay_db::Secret;

use crate::config::{ConfigError, PasswordSource, SecretSettings};

/// The account relay-sync logs in to MariaDB with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbLogin {
    /// `DB_USER`, or a JSON `DB_PASSWORD_SECRET`'s `username` when `DB_USER` is not set.
    pub user: String,
    /// The password; `None` when no source is configured.
    pub password: Option<Secret>,
}

/// A secret's text as a login: JSON with a `password` (and a `username`, used when
/// `settings.user_from_secret`), or else the text itself, without the line breaks it ends
/// with, as the password. No error holds any of the text.
// Without the `aws` feature no secret is read, but its rules are still tested.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) fn login_from_secret(
    text: &str,
    settings: &SecretSettings,
    db_user: &str,
) -> Result<(DbLogin, Shape), ConfigError> {
    let failed = |detail: &str| ConfigError::PasswordSecret {
        id: settings.id.clone(),
        detail: detail.to_owned(),
    };
    let json = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(fields)) => Some(fields),
        _ => None,
    };
    let Some(fields) = json else {
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(ConfigError::PasswordEmpty {
                what: PasswordSource::Secret(settings.clone()).describe(),
            });
        }
        let login = DbLogin {
            user: db_user.to_owned(),
            password: Some(Secret::new(password)),
        };
        return Ok((login, Shape::Plain));
    };
    // serde_json's own messages may quote the value they stumbled on: never shown.
    let password = match fields.get("password") {
        Some(serde_json::Value::String(password)) if !password.is_empty() => password,
        Some(serde_json::Value::String(_)) => {
            return Err(failed("its JSON \"password\" is empty"));
        }
        Some(_) => return Err(failed("its JSON \"password\" is not a string")),
        None => {
            return Err(failed(
                "it is JSON without a \"password\": relay-sync reads a plain password or \
                 {\"username\": ..., \"password\": ...}",
            ))
        }
    };
    let username = match fields.get("username") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(user)) if !user.is_empty() => Some(user.as_str()),
        Some(_) => return Err(failed("its JSON \"username\" is not a non-empty string")),
    };
    let (user, shape) = match username {
        Some(user) if settings.user_from_secret => (user, Shape::JsonWithUser),
        _ => (db_user, Shape::Json),
    };
    let login = DbLogin {
        user: user.to_owned(),
        password: Some(Secret::new(password.as_str())),
    };
    Ok((login, shape))
}

/// What a secret held, for `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) enum Shape {
    /// The password as plain text.
    Plain,
    /// JSON whose `password` is used, with `DB_USER` (set, or the JSON has no `username`).
    Json,
    /// JSON whose `username` and `password` are used (`DB_USER` is not set).
    JsonWithUser,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Plain => "a plain password",
            Shape::Json => "JSON; its password is used with DB_USER",
            Shape::JsonWithUser => "JSON; its username and password are used",
        })
    }
}

/// Reads `settings`' secret as a login, bounded by `timeout`; with the secret's ARN and what it
/// held, for `check`.
pub(crate) fn read_secret(
    settings: &SecretSettings,
    db_user: &str,
    timeout: Duration,
) -> Result<(DbLogin, String, Shape), ConfigError> {
    #[cfg(feature = "aws")]
    {
        let fetched = crate::aws::secrets_manager::fetch(settings, timeout).map_err(|detail| {
            ConfigError::PasswordSecret {
                id: settings.id.clone(),
                detail,
            }
        })?;
        let (login, shape) = login_from_secret(fetched.value.expose(), settings, db_user)?;
        Ok((login, fetched.arn, shape))
    }
    // Loading the config refuses the key in such a build; an embedder may still build a
    // Config by hand.
    #[cfg(not(feature = "aws"))]
    {
        let _ = (db_user, timeout);
        Err(ConfigError::PasswordSecret {
            id: settings.id.clone(),
            detail: "this relay-sync was built without AWS support (cargo feature `aws`)"
                .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(user_from_secret: bool) -> SecretSettings {
        SecretSettings {
            id: "relay-sync/db".to_owned(),
            region: Some("eu-central-1".to_owned()),
            endpoint: None,
            user_from_secret,
        }
    }

    fn login(user: &str, password: &str) -> DbLogin {
        DbLogin {
            user: user.to_owned(),
            password: Some(Secret::new(password)),
        }
    }

    #[test]
    fn a_plain_secret_is_the_password_and_json_gives_password_and_user() {
        let cases: &[(&str, bool, DbLogin, Shape)] = &[
            (
                "s3cr3t\n",
                true,
                login("relay_sync", "s3cr3t"),
                Shape::Plain,
            ),
            (
                " spaced pw ",
                true,
                login("relay_sync", " spaced pw "),
                Shape::Plain,
            ),
            // Not a JSON object: the text is the password, whatever it looks like.
            (
                "{not json",
                true,
                login("relay_sync", "{not json"),
                Shape::Plain,
            ),
            (
                "\"quoted\"",
                true,
                login("relay_sync", "\"quoted\""),
                Shape::Plain,
            ),
            (
                r#"{"username":"rds_user","password":"pw","engine":"mariadb","port":3306}"#,
                true,
                login("rds_user", "pw"),
                Shape::JsonWithUser,
            ),
            (
                r#"{"username":"rds_user","password":"pw"}"#,
                false,
                login("relay_sync", "pw"),
                Shape::Json,
            ),
            (
                r#"{"password":"pw"}"#,
                true,
                login("relay_sync", "pw"),
                Shape::Json,
            ),
            (
                r#"{"username":null,"password":"pw"}"#,
                true,
                login("relay_sync", "pw"),
                Shape::Json,
            ),
        ];
        for (text, user_from_secret, expected, shape) in cases {
            let got = login_from_secret(text, &settings(*user_from_secret), "relay_sync");
            match got {
                Ok(got) => assert_eq!(got, (expected.clone(), *shape), "{text}"),
                Err(error) => panic!("{text}: {error}"),
            }
        }
    }

    #[test]
    fn a_secret_that_gives_no_password_is_refused_without_showing_it() {
        let cases = [
            (
                "",
                "DB_PASSWORD_SECRET relay-sync/db gave an empty password",
            ),
            (
                "\n",
                "DB_PASSWORD_SECRET relay-sync/db gave an empty password",
            ),
            (
                r#"{"user":"x","pass":"hunter2"}"#,
                "cannot read DB_PASSWORD_SECRET relay-sync/db: it is JSON without a \"password\": \
                 relay-sync reads a plain password or {\"username\": ..., \"password\": ...}",
            ),
            (
                r#"{"password":""}"#,
                "cannot read DB_PASSWORD_SECRET relay-sync/db: its JSON \"password\" is empty",
            ),
            (
                r#"{"password":31337}"#,
                "cannot read DB_PASSWORD_SECRET relay-sync/db: its JSON \"password\" is not a \
                 string",
            ),
            (
                r#"{"username":["hunter2"],"password":"hunter2"}"#,
                "cannot read DB_PASSWORD_SECRET relay-sync/db: its JSON \"username\" is not a \
                 non-empty string",
            ),
        ];
        for (text, expected) in cases {
            let error = login_from_secret(text, &settings(true), "relay_sync")
                .expect_err(text)
                .to_string();
            assert_eq!(error, expected, "{text}");
            assert!(
                !error.contains("hunter2") && !error.contains("31337"),
                "{error}"
            );
        }
    }
}
