//! The keys of SPEC §5 for people: one table ([`SECTIONS`]) from which the sample config file
//! (`packaging/relay-sync.conf`) and the README's configuration table are rendered. A test keeps
//! the table, the files and the keys [`Config`](super::Config) reads equal.

use std::fmt::Write as _;

/// A group of keys: a heading of the sample config file.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// The heading.
    pub title: &'static str,
    /// What the sample config file says before the keys, or nothing.
    pub note: &'static str,
    /// The keys, in the order of SPEC §5.
    pub keys: &'static [Key],
}

/// One key as the documentation shows it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The name in the file; `RELAY_SYNC_<name>` in the environment.
    pub name: &'static str,
    /// The default.
    pub default: Shown,
    /// What the key is for, in one line.
    pub about: &'static str,
    /// Whether the value is a secret: an error never shows it.
    pub secret: bool,
    /// The value the sample config file sets, for a key it does not leave at its default.
    pub sample: Option<&'static str>,
}

/// A key's default as the documentation shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// None: the key must be set.
    Required,
    /// This value.
    Value(&'static str),
    /// Derived from other keys or from the system, as described.
    Derived(&'static str),
    /// Not set: the feature is off, or the list is empty.
    Unset,
}

const fn key(name: &'static str, default: Shown, about: &'static str) -> Key {
    Key {
        name,
        default,
        about,
        secret: false,
        sample: None,
    }
}

impl Key {
    const fn secret(self) -> Key {
        Key {
            secret: true,
            ..self
        }
    }

    const fn sample(self, value: &'static str) -> Key {
        Key {
            sample: Some(value),
            ..self
        }
    }
}

use Shown::{Derived, Required, Unset, Value};

/// Every key of SPEC §5, grouped as the sample config file shows them.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "Database: the admin panel's MariaDB (read only)",
        note: "The password: set at most ONE of DB_PASSWORD, DB_PASSWORD_FILE and \
               DB_PASSWORD_COMMAND.",
        keys: &[
            key("DB_HOST", Required, "Host name or IP address of MariaDB.")
                .sample("100.110.222.53"),
            key("DB_PORT", Value("3306"), "TCP port of MariaDB."),
            key(
                "DB_NAME",
                Value("mailserver_usermgmt"),
                "Database holding the `domains` table.",
            ),
            key(
                "DB_USER",
                Value("relay_sync"),
                "A user with SELECT on `domains` only (see /usr/share/relay-sync/create-user.sql).",
            ),
            key(
                "DB_PASSWORD",
                Unset,
                "The password itself (at most one of the three DB_PASSWORD keys); this file must then be mode 0600 (relay-sync refuses to \
                 run otherwise).",
            )
            .secret(),
            key(
                "DB_PASSWORD_FILE",
                Unset,
                "A file holding the password (trailing newline ignored), e.g. a systemd \
                 credential or a root-only file.",
            )
            .sample("/opt/mailserver/config/relay-sync.db-password"),
            key(
                "DB_PASSWORD_COMMAND",
                Unset,
                "A command run through /bin/sh -c whose stdout is the password (e.g. `aws \
                 secretsmanager get-secret-value --secret-id relay-sync/db --query SecretString \
                 --output text`); killed after COMMAND_TIMEOUT; its stdout never appears in a log \
                 or an error. If it fails, the run counts as a database failure (exit 3).",
            ),
            key(
                "DB_QUERY",
                Value("SELECT name FROM domains WHERE enabled = 1"),
                "The query; it must return one text column of domain names.",
            ),
            key(
                "DB_TLS",
                Value("disabled"),
                "Transport security: disabled, preferred, required, verify-ca or verify-full.",
            ),
            key(
                "DB_TLS_CA",
                Unset,
                "CA certificate (PEM) that signed the server's; needed by verify-ca and \
                 verify-full.",
            ),
            key(
                "DB_CONNECT_TIMEOUT",
                Value("3"),
                "Seconds (fractions allowed) to connect.",
            ),
            key(
                "DB_QUERY_TIMEOUT",
                Value("3"),
                "Seconds (fractions allowed) to run the query.",
            ),
        ],
    },
    Section {
        title: "Next hop: where the gateway forwards mail for the synced domains",
        note: "",
        keys: &[
            key(
                "DELL_RELAY_IP",
                Required,
                "The mailbox host: an IP address or a host name, without brackets; mail goes \
                 to RELAY_TRANSPORT:[DELL_RELAY_IP]:DELL_RELAY_PORT.",
            )
            .sample("100.110.222.53"),
            key("DELL_RELAY_PORT", Value("2525"), "The mailbox host's port."),
            key(
                "RELAY_TRANSPORT",
                Value("smtp"),
                "smtp, or lmtp when the port is Dovecot's LMTP.",
            ),
            key(
                "PRESERVE_DOMAINS",
                Unset,
                "Domains always kept in relay_domains, whatever the database says (comma or \
                 space separated).",
            )
            .sample("kuma8088.com"),
        ],
    },
    Section {
        title: "Postfix",
        note: "",
        keys: &[
            key(
                "POSTFIX_CONFIG_DIR",
                Value("/etc/postfix"),
                "Postfix's configuration directory; passed as -c when it is not /etc/postfix.",
            ),
            key(
                "POSTFIX_COMMAND_DIR",
                Value("/usr/sbin"),
                "Where postconf, postmap and postfix are (cron's PATH lacks /usr/sbin).",
            ),
            key(
                "POSTFIX_COMMAND_PREFIX",
                Unset,
                "Container mode: the words put before every Postfix command, e.g. `docker exec \
                 mailserver-postfix` (with or without -i). relay-sync writes TRANSPORT_FILE on \
                 this host and runs postmap on the same path in the container, so bind-mount its \
                 directory at the SAME path in both (`relay-sync check` verifies this). Each \
                 command runs under the container's own `timeout`, so that COMMAND_TIMEOUT ends \
                 it there too: the image needs /bin/sh and timeout (docs/containers.md).",
            ),
            key(
                "TRANSPORT_FILE",
                Derived("$POSTFIX_CONFIG_DIR/transport"),
                "The transport map's source; transport_maps in main.cf must name it (check \
                 verifies). A symbolic link stays one (its target is replaced).",
            ),
            key(
                "MAP_TYPE",
                Derived("Postfix's `default_database_type`"),
                "hash, lmdb, cdb or btree.",
            ),
            key(
                "RELAY_DOMAINS_MODE",
                Value("inline"),
                "inline (relay_domains holds the list, via postconf -e) or map (relay_domains \
                 names MAP_TYPE:RELAY_DOMAINS_MAP, a table relay-sync keeps; for thousands of \
                 domains).",
            ),
            key(
                "RELAY_DOMAINS_MAP",
                Derived("$POSTFIX_CONFIG_DIR/relay_domains"),
                "Map mode's table source.",
            ),
        ],
    },
    Section {
        title: "Recipient validation (opt-in)",
        note: "Off unless RECIPIENTS_QUERY is set. Then the gateway also learns which addresses \
               exist and rejects mail for others at RCPT TO; DB_USER needs SELECT on the \
               columns the query reads (see the opt-in block of \
               /usr/share/relay-sync/create-user.sql).",
        keys: &[
            key(
                "RECIPIENTS_QUERY",
                Unset,
                "The query for valid recipients, e.g. `SELECT email FROM users WHERE enabled = \
                 1`; it must return one text column of addresses (user@domain) or catch-alls \
                 (@domain).",
            ),
            key(
                "RECIPIENTS_MAP",
                Derived("$POSTFIX_CONFIG_DIR/relay_recipients"),
                "The recipient table's source, a table relay-sync keeps; relay_recipient_maps \
                 names MAP_TYPE:RECIPIENTS_MAP.",
            ),
        ],
    },
    Section {
        title: "Files relay-sync keeps",
        note: "",
        keys: &[
            key(
                "BACKUP_DIR",
                Value("/opt/mailserver/backup"),
                "Backups of relay_domains, the transport file (and map mode's table) before \
                 every change, as NAME.STAMP.bak; mode 0700.",
            ),
            key(
                "BACKUP_KEEP",
                Value("5"),
                "Generations kept from runs that worked (and rollbacks); those of runs that \
                 failed and rolled back are kept apart, at most as many again, and never push \
                 out a good one. Newest means last written (BACKUP_DIR/relay-sync.generations), \
                 whatever the clock said.",
            ),
            key(
                "LOG_FILE",
                Value("/var/log/mailserver/relay-sync.log"),
                "The log, created 0640 (rotated by /etc/logrotate.d/relay-sync); - writes the \
                 same lines to standard output (a container's log).",
            ),
            key(
                "STATE_DIR",
                Value("/var/lib/relay-sync"),
                "Failure counters and the last result (read by `relay-sync status`), and \
                 postconf.cache (what postconf printed, reused while main.cf is the same file; \
                 safe to delete).",
            ),
            key(
                "LOCK_FILE",
                Derived("$STATE_DIR/relay-sync.lock"),
                "One run at a time.",
            ),
            key(
                "METRICS_FILE",
                Unset,
                "Prometheus textfile-collector file written after every run, e.g. \
                 /var/lib/prometheus/node-exporter/relay_sync.prom.",
            ),
        ],
    },
    Section {
        title: "Safety guard and limits",
        note: "",
        keys: &[
            key(
                "MAX_REMOVE_PERCENT",
                Value("50"),
                "Refuse a run that would remove more than this percentage of the managed \
                 domains (and more than one); `relay-sync --force` overrides once.",
            ),
            key(
                "ALLOW_EMPTY",
                Value("no"),
                "yes: allow an empty database result; emptying the gateway also removes more \
                 than MAX_REMOVE_PERCENT, so that run needs --force as well.",
            ),
            key(
                "COMMAND_TIMEOUT",
                Value("120"),
                "Seconds (fractions allowed) any command relay-sync runs may take; past it the \
                 whole process group is killed and the step fails.",
            ),
        ],
    },
    Section {
        title: "Alerts",
        note: "On every reload failure, once when consecutive failures reach \
               ALERT_AFTER_FAILURES, and on recovery.",
        keys: &[
            key(
                "ALERT_COMMAND",
                Unset,
                "A command run through /bin/sh -c with the message on stdin, and \
                 RELAY_SYNC_ALERT_SEVERITY and RELAY_SYNC_ALERT_SUBJECT in its environment.",
            ),
            key(
                "ALERT_EMAIL_TO",
                Unset,
                "Alert mail: one recipient, sent through ALERT_SMTP_HOST:ALERT_SMTP_PORT (plain \
                 SMTP).",
            ),
            key(
                "ALERT_SMTP_HOST",
                Value("localhost"),
                "The mail relay for alerts.",
            ),
            key("ALERT_SMTP_PORT", Value("25"), "Its port."),
            key(
                "ALERT_EMAIL_FROM",
                Derived("`relay-sync@<hostname>`"),
                "Sender of alert mail.",
            ),
            key(
                "ALERT_SNS_TOPIC_ARN",
                Unset,
                "Alerts published to this Amazon SNS standard topic \
                 (arn:aws:sns:REGION:ACCOUNT:NAME), with the severity and host name as message \
                 attributes; credentials from AWS's standard chain (environment, ECS task role, \
                 instance profile, profiles); the role needs sns:Publish and \
                 sns:GetTopicAttributes (/usr/share/relay-sync/sns-policy.json). Bounded by \
                 COMMAND_TIMEOUT. Needs a build with the `sns` feature.",
            ),
            key(
                "ALERT_SNS_REGION",
                Derived("the region in ALERT_SNS_TOPIC_ARN"),
                "The region whose SNS endpoint is used.",
            ),
            key(
                "ALERT_SNS_ENDPOINT",
                Derived("the region's public endpoint"),
                "An SNS endpoint URL to use instead, e.g. a VPC interface endpoint's \
                 https://vpce-....sns.REGION.vpce.amazonaws.com.",
            ),
            key(
                "ALERT_AFTER_FAILURES",
                Value("5"),
                "Consecutive failed runs before an alert (a failed reload alerts at once).",
            ),
            key(
                "ALERT_AFTER_SECONDS",
                Value("1500"),
                "relay-sync watch: seconds (fractions allowed) a failure must last before an \
                 alert, instead of ALERT_AFTER_FAILURES; 1500 is the 25 minutes of 5 cron runs.",
            ),
        ],
    },
    Section {
        title: "Watch mode (relay-sync watch)",
        note: "",
        keys: &[
            key(
                "POLL_INTERVAL",
                Value("2"),
                "Seconds (fractions allowed) between polls of the change signal: one small \
                 query that fingerprints what DB_QUERY returns.",
            ),
            key(
                "RECONCILE_INTERVAL",
                Value("300"),
                "Seconds between full syncs whatever the signal says (also repairs a main.cf \
                 edited by hand), and the longest back-off of polls while the database is down.",
            ),
        ],
    },
];

/// Every key, in table order.
pub(super) fn keys() -> impl Iterator<Item = &'static Key> {
    SECTIONS.iter().flat_map(|section| section.keys)
}

/// Whether errors must not show `key`'s value.
pub(super) fn is_secret(key: &str) -> bool {
    keys().any(|known| known.name == key && known.secret)
}

const SAMPLE_HEADER: &str = "\
# /opt/mailserver/config/relay-sync.conf: relay-sync's configuration (mode 0600, owner root).
#
# KEY=VALUE lines; `#` starts a comment line (not an inline comment: `#` after `=` belongs to
# the value). One pair of quotes around a value is removed; nothing else is expanded, so paths
# are written out in full. Every key may also be set as RELAY_SYNC_<KEY> in the environment,
# which wins. Unknown keys are an error. Commented lines show the default.
# After editing: `relay-sync check` (add --json for monitoring).
#
# Generated from crates/relay-ops/src/config/keys.rs: edit the table there, then run
# `UPDATE_EXPECT=1 cargo test -p relay-ops config::`.
";

/// The sample config file, `packaging/relay-sync.conf`: every key with its description, set to
/// its sample value or commented out at its default.
pub fn sample_config() -> String {
    let mut out = SAMPLE_HEADER.to_owned();
    for section in SECTIONS {
        let heading = format!("# ---- {} ", section.title);
        let _ = writeln!(out, "\n{heading:-<92}");
        comment(&mut out, section.note);
        for key in section.keys {
            comment(&mut out, key.about);
            if let Derived(default) = key.default {
                comment(
                    &mut out,
                    &format!("By default {}.", default.replace('`', "")),
                );
            }
            let _ = match (key.sample, key.default) {
                (Some(value), _) => writeln!(out, "{}={value}", key.name),
                (None, Value(value)) => writeln!(out, "#{}={value}", key.name),
                (None, _) => writeln!(out, "#{}=", key.name),
            };
        }
    }
    out
}

/// Appends `text` as `# ` lines of at most 96 characters.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > 96 {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        let _ = writeln!(out, "{line}");
    }
}

/// relay-sync.conf(5), in roff: every key with its default and meaning, from the same table as
/// the sample config file and the README's table. `version` goes in the footer.
pub fn man_page(version: &str) -> String {
    let mut out = format!(
        ".TH RELAY-SYNC.CONF 5 \"\" \"relay-sync {version}\" \"File Formats\"\n\
         .SH NAME\nrelay-sync.conf \\- configuration of relay-sync\n\
         .SH SYNOPSIS\n{}\n\
         .SH DESCRIPTION\n{}\n",
        roff(super::DEFAULT_CONFIG_FILE),
        roff(
            "KEY=VALUE lines; lines starting with # or ; are comments. One pair of quotes \
             around a whole value is removed; nothing else is interpreted. Every key may also \
             come from the environment as RELAY_SYNC_<KEY>, which wins over the file. Unknown \
             keys, keys set twice and sections are errors naming the file and line. An empty \
             value is the same as not setting the key. Paths must be absolute; timeouts are \
             seconds, fractions allowed. The file, and the files and commands it names, must \
             be owned by root and writable by root alone; a file holding DB_PASSWORD must be \
             readable by root alone."
        )
    );
    for section in SECTIONS {
        let _ = writeln!(out, ".SS {}", roff(section.title));
        if !section.note.is_empty() {
            let _ = writeln!(out, "{}\n.PP", roff(section.note));
        }
        for key in section.keys {
            let default = match key.default {
                Required => "Required.".to_owned(),
                Value(value) => format!("Default: {value}."),
                Derived(default) => format!("Default: {}.", default.replace('`', "")),
                Unset => "Not set by default.".to_owned(),
            };
            let _ = writeln!(
                out,
                ".TP\n.B {}\n{} {}",
                key.name,
                roff(&key.about.replace('`', "")),
                roff(&default)
            );
        }
    }
    out.push_str(".SH SEE ALSO\nrelay-sync(1)\n");
    out
}

/// `text` as roff running text: backslashes escaped, and a line never starts a request.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    match text.chars().next() {
        Some('.' | '\'') => format!("\\&{text}"),
        _ => text,
    }
}

/// The README's configuration table: key, default, meaning.
pub fn readme_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for key in keys() {
        let default = match key.default {
            Required => "required".to_owned(),
            Value(value) => format!("`{value}`"),
            Derived(default) => default.to_owned(),
            Unset => "—".to_owned(),
        };
        let _ = writeln!(out, "| `{}` | {default} | {} |", key.name, key.about);
    }
    out
}
