//! The database login, and how a password from AWS Secrets Manager survives a rotation.
//!
//! [`Config::resolve_login`] reads the password from its source each time (the literal, the
//! file, the command, the secret). A gateway keeps the login read from `DB_PASSWORD_SECRET` in
//! its [`Logins`], so a watcher does not ask Secrets Manager at every sync. When MariaDB then
//! refuses that password (`ERROR 1045`, [`relay_db::DbError::is_password_refused`]), the secret
//! has probably been rotated: [`retry_refused`] reads it once more and, if it holds another
//! login, connects once more with it. When its current version still holds the refused login,
//! a rotation may be half-way (a single-user rotation sets the database's password in its
//! `setSecret` step, and makes the new version current only in `finishSecret`), so the
//! `AWSPENDING` version is tried instead. That costs a rotation no failed run. If the login is
//! refused again, or the secret holds nothing else, the run is a database failure (exit 3) as
//! before.
//!
//! While MariaDB keeps refusing, the secret is read again at most once per
//! `RECONCILE_INTERVAL` (a wrong secret must not hammer the API); a cron run is a process of
//! its own, so it reads the secret at most three times (current, current, pending). A renewed
//! login that MariaDB accepts ends
//! that: the next rotation is followed at once, and is logged once (`Database password
//! rotated`).
//!
//! A secret's text is the password, or the JSON an RDS rotation writes
//! (`{"username": …, "password": …}`, other fields ignored): its `password`, and its
//! `username` when `DB_USER` is not set ([`login_from_secret`]). The text is never logged and
//! never in an error.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::io;
use std::path::Path;

use relay_db::{DbError, Secret};
use relay_process::{excerpt, RunError};

use crate::config::{Config, ConfigError, PasswordSource, SecretSettings};
use crate::login::{DbLogin, Stage};

impl Config {
    /// The database login, its password read now: `DB_PASSWORD` itself, the content of
    /// `DB_PASSWORD_FILE`, the stdout of `DB_PASSWORD_COMMAND` (run through `/bin/sh -c`, its
    /// process group killed after `COMMAND_TIMEOUT`), or the secret `DB_PASSWORD_SECRET` names
    /// (read within `COMMAND_TIMEOUT`; a JSON secret's `username` is the user when `DB_USER` is
    /// not set). Trailing line breaks are removed from the file, the stdout and a plain secret;
    /// an empty result is an error rather than an empty password.
    pub fn resolve_login(&self) -> Result<DbLogin, ConfigError> {
        let password = match &self.db_password {
            PasswordSource::None => None,
            PasswordSource::Literal(secret) => Some(secret.clone()),
            PasswordSource::File(path) => Some(read_password_file(path)?),
            PasswordSource::Command(command) => {
                Some(run_password_command(command, self.command_timeout)?)
            }
            PasswordSource::Secret(settings) => {
                let read = read_current_secret(settings, &self.db_user, self.command_timeout)?;
                return Ok(read.0);
            }
        };
        Ok(DbLogin {
            user: self.db_user.clone(),
            password,
        })
    }
}

/// The logins a gateway connects with, kept between runs when they come from a secret.
#[derive(Debug, Default)]
pub(crate) struct Logins {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// The login last read from the secret.
    login: Option<DbLogin>,
    /// When the secret was last read again because MariaDB refused its password, until a
    /// login read then is accepted.
    reread_at: Option<Instant>,
    /// Whether the login kept came from the `AWSPENDING` version.
    pending: bool,
}

/// What reading the password again, after MariaDB refused it, gave.
#[derive(Debug)]
pub(crate) enum Renewal {
    /// Another login: connect once more with it.
    Retry(DbLogin),
    /// The source still holds the refused login.
    Unchanged,
    /// Read again less than `RECONCILE_INTERVAL` ago, and refused since: not read now.
    TooSoon(Duration),
    /// The source is not one that changes under a running gateway.
    NotRenewable,
    /// Reading it failed.
    Failed(ConfigError),
}

impl PasswordSource {
    /// Whether the password may change under a running gateway and be read anew when MariaDB
    /// refuses it: a secret in AWS Secrets Manager, which rotation changes.
    pub fn is_renewable(&self) -> bool {
        matches!(self, PasswordSource::Secret(_))
    }
}

impl Logins {
    /// The login to connect with: the one kept from the secret, or the source read now (and
    /// kept, when it is a secret).
    pub(crate) fn current(&self, config: &Config) -> Result<DbLogin, ConfigError> {
        if !config.db_password.is_renewable() {
            return config.resolve_login();
        }
        let mut kept = self.lock();
        if let Some(login) = &kept.login {
            return Ok(login.clone());
        }
        let login = config.resolve_login()?;
        kept.login = Some(login.clone());
        Ok(login)
    }

    /// The login kept from the secret, if any, without reading anything.
    pub(crate) fn kept(&self) -> Option<DbLogin> {
        self.lock().login.clone()
    }

    /// MariaDB refused `refused`'s password: reads the source again, when it is a secret and
    /// the rules above allow it. When the current version still holds the refused login, a
    /// rotation may be half-way (the database changed, the new version not current yet): its
    /// `AWSPENDING` version is tried then.
    pub(crate) fn renew(&self, config: &Config, refused: &DbLogin) -> Renewal {
        let PasswordSource::Secret(settings) = &config.db_password else {
            return Renewal::NotRenewable;
        };
        self.renew_with(
            true,
            config.reconcile_interval,
            Instant::now(),
            refused,
            |stage| {
                let read = read_secret(settings, &config.db_user, config.command_timeout, stage)?;
                Ok(read.map(|(login, _, _)| login))
            },
        )
    }

    /// [`Logins::renew`], with the source, the clock and the reading given.
    fn renew_with(
        &self,
        renewable: bool,
        interval: Duration,
        now: Instant,
        refused: &DbLogin,
        mut read: impl FnMut(Stage) -> Result<Option<DbLogin>, ConfigError>,
    ) -> Renewal {
        if !renewable {
            return Renewal::NotRenewable;
        }
        // Held while reading: a second caller refused meanwhile waits, then takes what this
        // one read instead of asking again.
        let mut kept = self.lock();
        if let Some(login) = kept.login.as_ref().filter(|login| *login != refused) {
            return Renewal::Retry(login.clone());
        }
        if let Some(at) = kept.reread_at {
            let since = now.saturating_duration_since(at);
            if since < interval {
                return Renewal::TooSoon(interval - since);
            }
        }
        kept.reread_at = Some(now);
        let current = match read(Stage::Current) {
            Err(error) => return Renewal::Failed(error),
            Ok(login) => login.filter(|login| login != refused),
        };
        let (login, pending) = match current {
            Some(login) => (login, false),
            // A pending version that cannot be read is no worse than none.
            None => match read(Stage::Pending) {
                Ok(Some(login)) if login != *refused => (login, true),
                _ => return Renewal::Unchanged,
            },
        };
        kept.login = Some(login.clone());
        kept.pending = pending;
        Renewal::Retry(login)
    }

    /// MariaDB accepted a renewed login: says so once, and a later refusal may read the secret
    /// again at once.
    pub(crate) fn accepted(&self, config: &Config) {
        let Some(pending) = self.accept() else {
            return;
        };
        let version = if pending {
            " in its AWSPENDING version (the rotation has not finished)"
        } else {
            ""
        };
        tracing::info!(
            "Database password rotated: {} holds a new password{version}, and MariaDB \
             accepted it",
            config.db_password.describe()
        );
    }

    /// Ends the refusal; when the secret had been read again for it, whether the login came
    /// from its `AWSPENDING` version.
    fn accept(&self) -> Option<bool> {
        let mut kept = self.lock();
        kept.reread_at.take().map(|_| kept.pending)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// MariaDB refused `login` with `error`: when the password comes from a secret that may be
/// read again now, reads it and runs `attempt` once more with the login it holds. Otherwise,
/// and when the new login fails too, the run fails with the error as it is.
pub(crate) async fn retry_refused<T, E, Fut>(
    logins: &Arc<Logins>,
    config: &Config,
    login: &DbLogin,
    error: DbError,
    attempt: impl FnOnce(DbLogin) -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: From<DbError>,
{
    if !error.is_password_refused() || !config.db_password.is_renewable() {
        return Err(error.into());
    }
    let (renewing, settings, refused) = (Arc::clone(logins), config.clone(), login.clone());
    let renewal = crate::off_the_executor(move || renewing.renew(&settings, &refused)).await;
    let source = config.db_password.describe();
    match renewal {
        Renewal::Retry(login) => {
            let result = attempt(login).await;
            if result.is_ok() {
                logins.accepted(config);
            }
            result
        }
        Renewal::Unchanged => {
            tracing::warn!(
                "MariaDB refused the password from {source}; read again, it is unchanged: \
                 the secret and the database user's password differ"
            );
            Err(error.into())
        }
        Renewal::Failed(reading) => {
            tracing::error!("MariaDB refused the password; reading it again failed: {reading}");
            Err(error.into())
        }
        Renewal::TooSoon(wait) => {
            tracing::debug!(
                "MariaDB refused the password from {source}; it is read again in {} s at the \
                 earliest (RECONCILE_INTERVAL)",
                wait.as_secs()
            );
            Err(error.into())
        }
        Renewal::NotRenewable => Err(error.into()),
    }
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

/// Reads the current version of `settings`' secret as a login, bounded by `timeout`; with the
/// secret's ARN and what it held, for `check`.
pub(crate) fn read_current_secret(
    settings: &SecretSettings,
    db_user: &str,
    timeout: Duration,
) -> Result<(DbLogin, String, Shape), ConfigError> {
    read_secret(settings, db_user, timeout, Stage::Current)?.ok_or_else(|| {
        ConfigError::PasswordSecret {
            id: settings.id.clone(),
            detail: "it has no current version (AWSCURRENT)".to_owned(),
        }
    })
}

/// Reads the version `stage` labels of `settings`' secret as a login, bounded by `timeout`;
/// with the secret's ARN and what it held, for `check`. `None` when there is no such version
/// (no rotation under way, for [`Stage::Pending`]).
pub(crate) fn read_secret(
    settings: &SecretSettings,
    db_user: &str,
    timeout: Duration,
    stage: Stage,
) -> Result<Option<(DbLogin, String, Shape)>, ConfigError> {
    #[cfg(feature = "aws")]
    {
        let fetched =
            crate::aws::secrets_manager::fetch(settings, timeout, stage).map_err(|detail| {
                ConfigError::PasswordSecret {
                    id: settings.id.clone(),
                    detail,
                }
            })?;
        let Some(fetched) = fetched else {
            return Ok(None);
        };
        let (login, shape) = login_from_secret(fetched.value.expose(), settings, db_user)?;
        Ok(Some((login, fetched.arn, shape)))
    }
    // Loading the config refuses the key in such a build; an embedder may still build a
    // Config by hand.
    #[cfg(not(feature = "aws"))]
    {
        let _ = (db_user, timeout, stage);
        Err(ConfigError::PasswordSecret {
            id: settings.id.clone(),
            detail: "this relay-sync was built without AWS support (cargo feature `aws`)"
                .to_owned(),
        })
    }
}

/// Removes the line breaks a file or a command's output ends with, and nothing else: spaces
/// may belong to the password.
fn strip_line_end(value: &str) -> &str {
    value.trim_end_matches(['\n', '\r'])
}

fn password_from_bytes(bytes: Vec<u8>, what: impl Fn() -> String) -> Result<Secret, ConfigError> {
    let text =
        String::from_utf8(bytes).map_err(|_| ConfigError::PasswordNotUtf8 { what: what() })?;
    let password = strip_line_end(&text);
    if password.is_empty() {
        return Err(ConfigError::PasswordEmpty { what: what() });
    }
    Ok(Secret::new(password))
}

/// `DB_PASSWORD_FILE`'s password, read through relay-fs and checked on its descriptor
/// ([`crate::config::read_password_file`]).
fn read_password_file(path: &Path) -> Result<Secret, ConfigError> {
    let bytes = crate::config::read_password_file(path)?;
    password_from_bytes(bytes, || PasswordSource::File(path.to_owned()).describe())
}

/// Runs `DB_PASSWORD_COMMAND` under `/bin/sh -c` with no stdin, and returns its stdout.
pub(crate) fn run_password_command(
    command: &str,
    timeout: Duration,
) -> Result<Secret, ConfigError> {
    let output = relay_process::Command::shell(command)
        .timeout(timeout)
        .run()
        .map_err(|error| match error {
            RunError::Timeout { after, .. } => ConfigError::PasswordCommandTimeout {
                command: command.to_owned(),
                timeout: after,
            },
            RunError::Spawn { source, .. } | RunError::Wait { source, .. } => {
                ConfigError::PasswordCommandSpawn {
                    command: command.to_owned(),
                    source,
                }
            }
            other => ConfigError::PasswordCommandSpawn {
                command: command.to_owned(),
                source: io::Error::other(other.to_string()),
            },
        })?;
    if !output.status.success() {
        return Err(ConfigError::PasswordCommandFailed {
            command: command.to_owned(),
            status: output.status.to_string(),
            stderr: excerpt(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    password_from_bytes(output.stdout, || {
        PasswordSource::Command(command.to_owned()).describe()
    })
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

    const INTERVAL: Duration = Duration::from_secs(300);

    /// A refused login is read again once; while refused, not again before the interval; a
    /// renewed login that works lets the next refusal read at once.
    #[test]
    fn a_refused_secret_is_read_again_at_most_once_per_interval() {
        let logins = Logins::default();
        let start = Instant::now();
        let (old, new, newer) = (login("u", "old"), login("u", "new"), login("u", "newer"));
        logins.lock().login = Some(old.clone());
        let never =
            |_| -> Result<Option<DbLogin>, ConfigError> { panic!("read while it must not be") };

        // Not a secret: nothing to read.
        assert!(matches!(
            logins.renew_with(false, INTERVAL, start, &old, never),
            Renewal::NotRenewable
        ));
        // The secret still holds the refused login.
        let same = logins.renew_with(true, INTERVAL, start, &old, |stage| {
            Ok((stage == Stage::Current).then(|| old.clone()))
        });
        assert!(matches!(same, Renewal::Unchanged), "{same:?}");
        // Refused again a poll later: not read again before the interval.
        let later = start + Duration::from_secs(2);
        let soon = logins.renew_with(true, INTERVAL, later, &old, never);
        assert!(
            matches!(soon, Renewal::TooSoon(wait) if wait == Duration::from_secs(298)),
            "{soon:?}"
        );
        // After the interval it is read again, and holds a new login: retry with it.
        let after = start + INTERVAL;
        let renewed = logins.renew_with(true, INTERVAL, after, &old, |stage| {
            assert_eq!(stage, Stage::Current, "a new current version is enough");
            Ok(Some(new.clone()))
        });
        assert!(
            matches!(&renewed, Renewal::Retry(login) if *login == new),
            "{renewed:?}"
        );
        assert_eq!(logins.lock().login, Some(new.clone()));
        // Another caller refused with the old login takes the new one without reading.
        let other = logins.renew_with(true, INTERVAL, after, &old, never);
        assert!(
            matches!(&other, Renewal::Retry(login) if *login == new),
            "{other:?}"
        );
        // MariaDB accepted it (once: a second caller's success says nothing new): the next
        // rotation is read at once, even within the interval.
        assert_eq!(logins.accept(), Some(false));
        assert_eq!(logins.accept(), None);
        let next = after + Duration::from_secs(1);
        let rotated = logins.renew_with(true, INTERVAL, next, &new, |_| Ok(Some(newer.clone())));
        assert!(
            matches!(&rotated, Renewal::Retry(login) if *login == newer),
            "{rotated:?}"
        );
    }

    /// A rotation caught half-way: the database has the new password, the current version
    /// still the old one; the pending version holds the new one.
    #[test]
    fn a_rotation_half_way_is_followed_through_the_pending_version() {
        let logins = Logins::default();
        let (old, new) = (login("u", "old"), login("u", "new"));
        let mut asked = Vec::new();
        let renewed = logins.renew_with(true, INTERVAL, Instant::now(), &old, |stage| {
            asked.push(stage);
            Ok(Some(match stage {
                Stage::Current => old.clone(),
                Stage::Pending => new.clone(),
            }))
        });
        assert!(
            matches!(&renewed, Renewal::Retry(login) if *login == new),
            "{renewed:?}"
        );
        assert_eq!(asked, [Stage::Current, Stage::Pending]);
        assert_eq!(logins.accept(), Some(true));
        // No rotation under way, or a pending version that cannot be read: unchanged.
        for pending in [Ok(None), Ok(Some(old.clone())), Err(())] {
            let logins = Logins::default();
            let renewal =
                logins.renew_with(true, INTERVAL, Instant::now(), &old, |stage| match stage {
                    Stage::Current => Ok(Some(old.clone())),
                    Stage::Pending => pending.clone().map_err(|()| ConfigError::PasswordSecret {
                        id: "relay-sync/db".to_owned(),
                        detail: "denied".to_owned(),
                    }),
                });
            assert!(matches!(renewal, Renewal::Unchanged), "{renewal:?}");
        }
    }

    /// A read that fails counts as a read: a secret the role may not read is not asked for at
    /// every poll either.
    #[test]
    fn a_failed_read_waits_for_the_interval_too() {
        let logins = Logins::default();
        let start = Instant::now();
        let refused = login("u", "old");
        let failing = logins.renew_with(true, INTERVAL, start, &refused, |_| {
            Err(ConfigError::PasswordSecret {
                id: "relay-sync/db".to_owned(),
                detail: "access denied".to_owned(),
            })
        });
        assert!(matches!(failing, Renewal::Failed(_)), "{failing:?}");
        let soon = logins.renew_with(true, INTERVAL, start + INTERVAL / 2, &refused, |_| {
            panic!("read again within the interval")
        });
        assert!(matches!(soon, Renewal::TooSoon(_)), "{soon:?}");
    }
}
