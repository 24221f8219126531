//! What a reader of the man pages needs to know about operating a gateway and clap cannot
//! say: the description, the environment, the files (the file layout of a gateway, which only
//! relay-ops knows) and each command's exit status. relay-cli renders them as roff; an admin
//! tool may show them too.

use crate::ExitStatus;

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
        "With ALERT_SNS_TOPIC_ARN or DB_PASSWORD_SECRET (a build with the aws feature): read \
         by AWS's standard credential chain and endpoint settings, as the AWS CLI reads them. \
         No credential is ever logged or shown.",
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
    (
        "/usr/share/relay-sync/container/relay-sync-container-exec",
        "A POSTFIX_COMMAND_PREFIX for a Postfix container whose name is generated (ECS on \
         EC2): it runs the command in the one running container with a label.",
    ),
    (
        "/usr/share/relay-sync/schema/",
        "The JSON Schema of each --json document (relay-sync.status-1.schema.json, …).",
    ),
    (
        "/usr/share/relay-sync/monitoring/",
        "Prometheus alerting rules and a Grafana dashboard for METRICS_FILE's metrics.",
    ),
    (
        "/usr/share/doc/relay-sync/THIRD-PARTY-LICENSES",
        "The licences of the crates linked into relay-sync.",
    ),
];

/// Every command of `relay-sync`, in the order `--help` lists them, and the two generators.
pub const COMMANDS: &[&str] = &[
    "sync",
    "check",
    "status",
    "watch",
    "rollback",
    "backups",
    "hold",
    "release",
    "completions",
    "man",
];

/// One exit code a command can end with, and what it means for that command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitDoc {
    /// The status; [`ExitStatus::code`] is the number.
    pub status: ExitStatus,
    /// One line, for `--help`.
    pub summary: &'static str,
    /// In full, for the man page and the README.
    pub detail: &'static str,
}

/// What `command` can exit with, one entry per code, in code order: the EXIT STATUS of its
/// man page, the end of its `--help` and its rows in the README. Empty for an unknown command.
/// A sync's are SPEC §8's; a test in `exit.rs` keeps each list equal to the statuses the
/// command's outcomes can have.
pub fn exits(command: &str) -> Vec<ExitDoc> {
    use ExitStatus::{
        CheckFailed, Critical, Internal, Refused, StepFailed, Success, Unhealthy, Usage,
    };
    let doc = |status, summary, detail| ExitDoc {
        status,
        summary,
        detail,
    };
    let same = |status, text| doc(status, text, text);
    match command {
        "sync" => ExitStatus::SPEC
            .iter()
            .map(|&status| ExitDoc {
                status,
                summary: status.summary(),
                detail: status.meaning(),
            })
            .collect(),
        "check" => vec![
            same(Success, "every check passed (warnings allowed)"),
            doc(
                CheckFailed,
                "a check failed",
                "a check failed, a broken configuration included; the report says which",
            ),
            same(Usage, "a usage error"),
        ],
        "status" => vec![
            same(Success, "the status was shown (with --max-age: healthy)"),
            doc(
                Unhealthy,
                "--max-age: no successful sync recent enough",
                "--max-age SECONDS: no successful sync ended in the last SECONDS (a container \
                 HEALTHCHECK's unhealthy)",
            ),
            doc(
                Usage,
                "a usage or configuration error",
                "a usage or configuration error, e.g. --max-age without a number",
            ),
        ],
        "watch" => vec![
            same(
                Success,
                "stopped by SIGTERM or SIGINT, after the step in progress",
            ),
            doc(
                Internal,
                "the watcher could not start",
                "the watcher could not start its runtime or signal handlers",
            ),
            doc(
                Usage,
                "a usage or configuration error",
                "a usage or configuration error, or a LOG_FILE that cannot be opened",
            ),
        ],
        "rollback" => {
            vec![
            doc(
                Success,
                "rolled back and Postfix reloaded (and held, with --hold)",
                "rolled back and Postfix reloaded (and held, with --hold); with --dry-run, the \
                 rollback could be done as asked",
            ),
            doc(
                Internal,
                "a file could not be read or written",
                "the run lock, a backup, a file to restore or the hold file could not be read \
                 or written",
            ),
            doc(
                Usage,
                "no such generation, a file relay-sync refuses, or a usage or configuration \
                 error",
                "no such generation (the error names those there are), no backups, a backup \
                 relay-sync cannot trust (another user's, in a BACKUP_DIR others can write, or \
                 changed since it was written), a hold file it refuses, an empty --hold reason, \
                 a missing Postfix command, or a usage or configuration error",
            ),
            doc(
                Refused,
                "refused (a sync is running, it is not safe, or it needs --force); nothing \
                 changed",
                "refused, nothing changed: a sync holds the run lock, the generation cannot be \
                 restored without leaving a relayed domain unrouted, or it needs --force (it \
                 holds a relay_domains token or a hand-written route a sync never writes, or it \
                 has no digests); with --dry-run, what a rollback would end with",
            ),
            same(
                StepFailed,
                "a Postfix command failed before anything was changed",
            ),
            doc(
                Critical,
                "a step failed after the current state was saved; manual intervention required",
                "a step failed after the current state was saved: the error says what was \
                 restored and the `relay-sync rollback --to STAMP` that puts the saved state \
                 back; manual intervention required",
            ),
        ]
        }
        "backups" => vec![
            same(Success, "the generations were listed"),
            same(Internal, "BACKUP_DIR could not be read"),
            doc(
                Usage,
                "a BACKUP_DIR relay-sync refuses, or a usage or configuration error",
                "a BACKUP_DIR or backup index relay-sync refuses (another user's, one others \
                 can write, a link or a FIFO; the error names the fix), or a usage or \
                 configuration error",
            ),
        ],
        "hold" => vec![
            same(Success, "syncs are held"),
            same(Internal, "the hold file in STATE_DIR could not be written"),
            doc(
                Usage,
                "an empty --reason, a hold file relay-sync refuses, or a usage or \
                 configuration error",
                "an empty --reason, a hold file relay-sync refuses (a link, a FIFO or another \
                 user's file at STATE_DIR/hold, or a STATE_DIR others can write; the error names \
                 the fix), or a usage or configuration error",
            ),
        ],
        "release" => vec![
            same(Success, "the hold was lifted, or syncs were not held"),
            same(
                Internal,
                "the hold file in STATE_DIR could not be read or removed",
            ),
            doc(
                Usage,
                "a hold file relay-sync refuses, or a usage or configuration error",
                "a hold file relay-sync refuses (a link, a FIFO or another user's file at \
                 STATE_DIR/hold, or a STATE_DIR others can write; the error names the fix), or \
                 a usage or configuration error",
            ),
        ],
        "completions" => vec![
            same(Success, "the script was printed"),
            same(Internal, "standard output could not be written"),
            same(Usage, "an unknown shell, or another usage error"),
        ],
        "man" => vec![
            same(Success, "the page was printed, or every page written"),
            same(Internal, "a page could not be written"),
            same(Usage, "no such page, or another usage error"),
        ],
        _ => Vec::new(),
    }
}

/// The README's exit-code tables: SPEC §8's for a sync, then every other command's codes (from
/// [`exits`]).
pub fn exit_code_table() -> String {
    let mut out = String::from("| exit | meaning |\n|---|---|\n");
    for status in ExitStatus::SPEC {
        out.push_str(&format!("| {} | {} |\n", status.code(), status.meaning()));
    }
    out.push_str(
        "\nThe other commands (`relay-sync COMMAND --help` and relay-sync-COMMAND(1) say \
         more):\n\n| command | exit codes |\n|---|---|\n",
    );
    for command in COMMANDS.iter().filter(|c| **c != "sync") {
        let codes: Vec<String> = exits(command)
            .iter()
            .map(|exit| format!("`{}` {}", exit.status.code(), exit.summary))
            .collect();
        out.push_str(&format!("| `{command}` | {} |\n", codes.join(" · ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's exit-code tables are rendered from [`ExitStatus`] and
    /// [`exits`]; `UPDATE_EXPECT=1` rewrites them instead of failing.
    #[test]
    fn the_readme_lists_the_exit_codes() {
        const BEGIN: &str = "<!-- BEGIN exit codes: generated from relay_ops::ExitStatus -->\n";
        const END: &str = "<!-- END exit codes -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (before, rest) = readme
            .split_once(BEGIN)
            .expect("README.md has the BEGIN marker");
        let (_, after) = rest.split_once(END).expect("README.md has the END marker");
        let rendered = format!("{before}{BEGIN}{}{END}{after}", exit_code_table());
        if rendered != readme {
            if std::env::var_os("UPDATE_EXPECT").is_some_and(|value| value == "1") {
                std::fs::write(&path, rendered).unwrap();
            } else {
                panic!(
                    "README.md's exit codes differ from relay_ops::ExitStatus; regenerate with \
                     `UPDATE_EXPECT=1 cargo test -p relay-ops manual`"
                );
            }
        }
    }
}
