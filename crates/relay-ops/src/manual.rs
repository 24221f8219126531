//! What a reader of the man pages needs to know about operating a gateway and clap cannot
//! say: the description, the environment, the files (the file layout of a gateway, which only
//! relay-ops knows) and each command's exit status. relay-cli renders them as roff; an admin
//! tool may show them too.

/// The DESCRIPTION of relay-sync(1); `--help` keeps its shorter text.
pub const DESCRIPTION: &str = "relay-sync keeps a Postfix MX gateway's relay_domains and \
transport map in step with the enabled domains of the admin panel's MariaDB. It is run as root \
every 5 minutes, by relay-sync.timer or by cron. Without a command it runs sync.

One run takes LOCK_FILE, reads the enabled domains, plans the domains to add and remove, \
refuses a mass removal (the safety guard), backs up relay_domains and the transport file to \
BACKUP_DIR, applies the change in an order that never lets Postfix accept a domain without its \
transport entry, reloads Postfix and verifies the result. A failed step is rolled back. The \
database is only read.";

/// The environment relay-sync reads (and the variables it sets for `ALERT_COMMAND`).
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "RELAY_SYNC_<KEY>",
        "Any configuration key, e.g. RELAY_SYNC_DB_HOST; the environment wins over the \
         configuration file. No command relay-sync runs inherits these variables.",
    ),
    (
        "RELAY_SYNC_ALERT_SEVERITY, RELAY_SYNC_ALERT_SUBJECT",
        "Not read: set for ALERT_COMMAND, which gets the alert's message on its standard input.",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, \
         AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, \
         AWS_EC2_METADATA_DISABLED, AWS_ENDPOINT_URL_SNS",
        "With ALERT_SNS_TOPIC_ARN (a build with the sns feature): read by AWS's standard \
         credential chain and endpoint settings, as the AWS CLI reads them. No credential is \
         ever logged or shown.",
    ),
];

/// The default paths; each is a configuration key and may be elsewhere.
pub const FILES: &[(&str, &str)] = &[
    (
        "/opt/mailserver/config/relay-sync.conf",
        "The configuration (KEY=VALUE lines, mode 0600; --config names another).",
    ),
    (
        "/opt/mailserver/config/relay-sync.db-password",
        "The database password, when DB_PASSWORD_FILE names it (mode 0600).",
    ),
    (
        "/etc/postfix/main.cf, /etc/postfix/transport",
        "Postfix's relay_domains and the transport map's source (POSTFIX_CONFIG_DIR, \
         TRANSPORT_FILE); relay-sync owns the transport file's managed block only.",
    ),
    (
        "/opt/mailserver/backup/",
        "BACKUP_DIR: the backup generations (relay_domains.STAMP.bak, transport.STAMP.bak), \
         BACKUP_KEEP of each. Removing or purging the package never deletes them.",
    ),
    (
        "/var/log/mailserver/relay-sync.log",
        "LOG_FILE, rotated by /etc/logrotate.d/relay-sync.",
    ),
    (
        "/var/lib/relay-sync/",
        "STATE_DIR: state (the last result and the failure streak), relay-sync.lock \
         (LOCK_FILE), postconf.cache and alerts.pending.",
    ),
    (
        "/usr/lib/systemd/system/relay-sync.service, relay-sync.timer",
        "The hardened unit and its 5-minute timer (not enabled by the package).",
    ),
    (
        "/usr/share/relay-sync/relay-sync.cron",
        "The cron alternative to the timer (copy it to /etc/cron.d/relay-sync).",
    ),
    (
        "/usr/share/relay-sync/create-user.sql",
        "Creates the SELECT-only database user.",
    ),
];

/// A command's EXIT STATUS items: a sync's come from [`crate::EXIT_CODES`] (the README's
/// table comes from the same list), the others' are fixed.
pub fn exit_status(command: &str) -> Vec<(String, String)> {
    if command == "sync" {
        return crate::EXIT_CODES
            .iter()
            .map(|(code, meaning)| (code.to_string(), meaning.replace('`', "")))
            .collect();
    }
    other_exit_status(command)
        .iter()
        .map(|(code, text)| ((*code).to_owned(), (*text).to_owned()))
        .collect()
}

/// The exit status of the commands that do not sync.
fn other_exit_status(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "check" => &[
            ("0", "Every check passed."),
            ("1", "A check failed; the report says which."),
            ("2", "A usage error."),
        ],
        "rollback" => &[
            ("0", "Rolled back and Postfix reloaded."),
            (
                "1",
                "The rollback failed or another run holds the lock; the log says why.",
            ),
            ("2", "A usage or configuration error."),
        ],
        "backups" => &[
            ("0", "The generations were listed."),
            ("1", "BACKUP_DIR could not be read."),
            ("2", "A usage or configuration error."),
        ],
        _ => &[("0", "Success."), ("2", "A usage or configuration error.")],
    }
}
