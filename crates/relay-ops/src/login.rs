//! The database login relay-sync connects with, and the versions of a secret it may come
//! from: the values the config, the password sources and the AWS client pass each other.

use relay_db::Secret;

/// The account relay-sync logs in to MariaDB with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbLogin {
    /// `DB_USER`, or a JSON `DB_PASSWORD_SECRET`'s `username` when `DB_USER` is not set.
    pub user: String,
    /// The password; `None` when no source is configured.
    pub password: Option<Secret>,
}

/// A version of a secret, by the label Secrets Manager's rotation gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `AWSCURRENT`: the secret's value.
    Current,
    /// `AWSPENDING`: the value a rotation under way has set, or is about to set, in the
    /// database, before it makes it current.
    Pending,
}
