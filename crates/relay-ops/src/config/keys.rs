//! Every key of relay-sync.conf, declared once: this table is where a key is added. Its doc
//! comment is the documentation (the sample config file, docs/configuration.md's table and
//! relay-sync.conf(5) are rendered from it), its value type reads and checks the value, and its
//! default is text the same type reads. What a key means beyond its own value (a default derived
//! from another key, keys that exclude each other) is a rule in `Raw::into_config`.
//!
//! A site-specific key has no default and no live value in the sample config file: it shows an
//! `.example(...)`, commented out, so that the file as shipped configures nothing.
//!
//! Adding a key is one declaration here; then `UPDATE_EXPECT=1 cargo test -p relay-ops config::`
//! renders the documentation again. Its value reaches [`Config`](super::Config) through
//! `Raw::into_config`, which names every field: the build fails until the new one is used. A
//! key that needs a cargo feature is declared like any other, so that a build without the
//! feature can refuse it by name instead of calling it unknown: see `ALERT_SNS_TOPIC_ARN` and
//! `SNS_KEYS`. A new value type is a `value_type!` in `values.rs`.

use super::declare::{config_keys, is_field_name, parse_default, Key, Section, Shown};
use super::values::*;

config_keys! {
    /// The password: set at most ONE of DB_PASSWORD, DB_PASSWORD_FILE, DB_PASSWORD_COMMAND and
    /// DB_PASSWORD_SECRET (on AWS, the secret is the recommended way).
    section "Database: the admin panel's MariaDB (read only)" {
        /// Host name or IP address of MariaDB; or several, comma separated, tried in order
        /// (a replica, then the primary: `replica.example, primary.example`), each under
        /// DB_CONNECT_TIMEOUT: the first that answers is read. HOST:PORT for a host not at
        /// DB_PORT.
        db_host "DB_HOST": HostList = required.example("192.0.2.10"),
        /// TCP port of MariaDB (of each DB_HOST that names none).
        db_port "DB_PORT": Port = default("3306"),
        /// Database holding the `domains` table.
        db_name "DB_NAME": Text = default("mailserver_usermgmt"),
        /// A user with SELECT on `domains` only (see /usr/share/relay-sync/create-user.sql).
        /// When not set, a JSON DB_PASSWORD_SECRET's "username" is used instead of the default.
        db_user "DB_USER": Text = default("relay_sync"),
        /// The password itself (at most one of the four DB_PASSWORD keys); this file must then
        /// be mode 0600 (relay-sync refuses to run otherwise).
        db_password "DB_PASSWORD": Text = unset.secret(),
        /// A file holding the password (trailing newline ignored), e.g. a systemd credential or a
        /// root-only file.
        db_password_file "DB_PASSWORD_FILE": AbsolutePath =
            unset.shipped("/opt/mailserver/config/relay-sync.db-password"),
        /// A command run through /bin/sh -c whose stdout is the password (for a secret store
        /// other than AWS Secrets Manager); killed after COMMAND_TIMEOUT; its stdout never
        /// appears in a log or an error. If it fails, the run counts as a database failure
        /// (exit 3). Its first program must be root's alone, as for ALERT_COMMAND; no AWS_*
        /// variable reaches it.
        db_password_command "DB_PASSWORD_COMMAND": Text =
            unset.example("vault kv get -field=password secret/relay-sync/db"),
        /// The password from AWS Secrets Manager: a secret's ARN (its region is used) or name. A
        /// plain secret is the password; a JSON one ({"username": ..., "password": ...}, as RDS
        /// rotation writes it) gives the password, and the user when DB_USER is not set.
        /// Credentials from AWS's standard chain (environment, ECS task role, instance profile,
        /// profiles); the role needs secretsmanager:GetSecretValue, and kms:Decrypt for a
        /// customer managed key (/usr/share/relay-sync/secret-policy.json). Read once per run,
        /// bounded by COMMAND_TIMEOUT, never logged; when MariaDB refuses the password (a
        /// rotation), read again once and the login retried. Needs a build with the `aws`
        /// feature.
        db_password_secret "DB_PASSWORD_SECRET": SecretId = unset.example(
            "arn:aws:secretsmanager:eu-central-1:123456789012:secret:relay-sync/db-AbCdEf"
        ),
        /// The region whose Secrets Manager is asked.
        db_password_secret_region "DB_PASSWORD_SECRET_REGION": AwsRegion = derived(
            "the region in DB_PASSWORD_SECRET's ARN; for a name, AWS's standard chain (AWS_REGION, profile, instance metadata)"
        ),
        /// A Secrets Manager endpoint URL to use instead, e.g. a VPC interface endpoint's
        /// https://vpce-....secretsmanager.REGION.vpce.amazonaws.com; the same rule as
        /// ALERT_SNS_ENDPOINT's.
        db_password_secret_endpoint "DB_PASSWORD_SECRET_ENDPOINT": Endpoint =
            derived("the region's public endpoint"),
        /// The query; it must return one text column of domain names.
        db_query "DB_QUERY": Text = default("SELECT name FROM domains WHERE enabled = 1"),
        /// Transport security: disabled, preferred, required, verify-ca or verify-full.
        db_tls "DB_TLS": Tls = default("disabled"),
        /// CA certificate (PEM) that signed the server's; needed by verify-ca and verify-full.
        db_tls_ca "DB_TLS_CA": AbsolutePath = unset,
        /// Seconds (fractions allowed) to connect.
        db_connect_timeout "DB_CONNECT_TIMEOUT": Seconds = default("3"),
        /// Seconds (fractions allowed) to run the query.
        db_query_timeout "DB_QUERY_TIMEOUT": Seconds = default("3"),
    }

    section "Next hop: where the gateway forwards mail for the synced domains" {
        /// The mailbox host: an IP address or a host name, without brackets; mail goes to
        /// RELAY_TRANSPORT:[DELL_RELAY_IP]:DELL_RELAY_PORT.
        dell_relay_ip "DELL_RELAY_IP": Host = required.example("192.0.2.25"),
        /// The mailbox host's port.
        dell_relay_port "DELL_RELAY_PORT": Port = default("2525"),
        /// smtp, or lmtp when the port is Dovecot's LMTP.
        relay_transport "RELAY_TRANSPORT": RelayTransport = default("smtp"),
        /// Domains always kept in relay_domains, whatever the database says (comma or space
        /// separated).
        preserve_domains "PRESERVE_DOMAINS": DomainList = unset.example("example.com"),
    }

    section "Postfix" {
        /// Postfix's configuration directory; passed as -c when it is not /etc/postfix.
        postfix_config_dir "POSTFIX_CONFIG_DIR": AbsolutePath = default("/etc/postfix"),
        /// Where postconf, postmap and postfix are (cron's PATH lacks /usr/sbin).
        postfix_command_dir "POSTFIX_COMMAND_DIR": AbsolutePath = default("/usr/sbin"),
        /// Container mode: the words put before every Postfix command (with or without -i).
        /// relay-sync writes TRANSPORT_FILE on this host and runs postmap on the same path in
        /// the container, so bind-mount its directory at the SAME path in both (`relay-sync
        /// check` verifies this). Each command runs under the container's own `timeout`, so that
        /// COMMAND_TIMEOUT ends it there too: the image needs /bin/sh and timeout
        /// (docs/containers.md).
        postfix_command_prefix "POSTFIX_COMMAND_PREFIX": Words =
            unset.example("docker exec mailserver-postfix"),
        /// The transport map's source; transport_maps in main.cf must name it (check verifies).
        /// A symbolic link stays one (its target is replaced).
        transport_file "TRANSPORT_FILE": AbsolutePath = derived("$POSTFIX_CONFIG_DIR/transport"),
        /// hash, lmdb, cdb or btree.
        map_type "MAP_TYPE": MapType = derived("Postfix's `default_database_type`"),
        /// inline (relay_domains holds the list, via postconf -e) or map (relay_domains names
        /// MAP_TYPE:RELAY_DOMAINS_MAP, a table relay-sync keeps; for thousands of domains).
        relay_domains_mode "RELAY_DOMAINS_MODE": DomainsMode = default("inline"),
        /// Map mode's table source.
        relay_domains_map "RELAY_DOMAINS_MAP": AbsolutePath =
            derived("$POSTFIX_CONFIG_DIR/relay_domains"),
    }

    /// Off unless RECIPIENTS_QUERY is set. Then the gateway also learns which addresses exist and
    /// rejects mail for others at RCPT TO; DB_USER needs SELECT on the columns the query reads
    /// (see the opt-in block of /usr/share/relay-sync/create-user.sql).
    section "Recipient validation (opt-in)" {
        /// The query for valid recipients; it must return one text column of addresses
        /// (user@domain) or catch-alls (@domain).
        recipients_query "RECIPIENTS_QUERY": Text =
            unset.example("SELECT email FROM users WHERE enabled = 1"),
        /// The recipient table's source, a table relay-sync keeps; relay_recipient_maps names
        /// MAP_TYPE:RECIPIENTS_MAP.
        recipients_map "RECIPIENTS_MAP": AbsolutePath =
            derived("$POSTFIX_CONFIG_DIR/relay_recipients"),
    }

    section "Files relay-sync keeps" {
        /// Backups of relay_domains, the transport file (and map mode's table) before every
        /// change, as NAME.STAMP.bak; mode 0700.
        backup_dir "BACKUP_DIR": AbsolutePath = default("/opt/mailserver/backup"),
        /// Generations kept from runs that worked (and rollbacks); those of runs that failed and
        /// rolled back are kept apart, at most as many again, and never push out a good one.
        /// Newest means last written (BACKUP_DIR/relay-sync.generations), whatever the clock
        /// said.
        backup_keep "BACKUP_KEEP": Keep = default("5"),
        /// The log, created 0640 (rotated by /etc/logrotate.d/relay-sync); - writes the same
        /// lines to standard output (a container's log).
        log_file "LOG_FILE": LogFile = default("/var/log/mailserver/relay-sync.log"),
        /// Failure counters and the last result (read by `relay-sync status`), and
        /// postconf.cache (what postconf printed, reused while main.cf is the same file; safe to
        /// delete).
        state_dir "STATE_DIR": AbsolutePath = default("/var/lib/relay-sync"),
        /// One run at a time.
        lock_file "LOCK_FILE": AbsolutePath = derived("$STATE_DIR/relay-sync.lock"),
        /// Prometheus textfile-collector file written after every run.
        metrics_file "METRICS_FILE": AbsolutePath =
            unset.example("/var/lib/prometheus/node-exporter/relay_sync.prom"),
    }

    section "Safety guard and limits" {
        /// Refuse a run that would remove more than this percentage of the managed domains (and
        /// more than one); `relay-sync --force` overrides once.
        max_remove_percent "MAX_REMOVE_PERCENT": Percent = default("50"),
        /// yes: allow an empty database result; emptying the gateway also removes more than
        /// MAX_REMOVE_PERCENT, so that run needs --force as well.
        allow_empty "ALLOW_EMPTY": Bool = default("no"),
        /// Seconds (fractions allowed) any command relay-sync runs may take; past it the whole
        /// process group is killed and the step fails.
        command_timeout "COMMAND_TIMEOUT": Seconds = default("120"),
    }

    /// On every reload failure, once when consecutive failures reach ALERT_AFTER_FAILURES, and on
    /// recovery.
    section "Alerts" {
        /// A command run through /bin/sh -c with the message on stdin, and
        /// RELAY_SYNC_ALERT_SEVERITY and RELAY_SYNC_ALERT_SUBJECT in its environment. The program
        /// it starts with (a path, or a name found in PATH) must be root's alone, as must its
        /// directory (SECURITY.md).
        alert_command "ALERT_COMMAND": Text = unset.example("logger -t relay-sync -p mail.err"),
        /// Alert mail: one recipient, sent through ALERT_SMTP_HOST:ALERT_SMTP_PORT (plain SMTP).
        alert_email_to "ALERT_EMAIL_TO": Email = unset.example("ops@example.com"),
        /// The mail relay for alerts.
        alert_smtp_host "ALERT_SMTP_HOST": Host = default("localhost"),
        /// Its port.
        alert_smtp_port "ALERT_SMTP_PORT": Port = default("25"),
        /// Sender of alert mail.
        alert_email_from "ALERT_EMAIL_FROM": Email = derived("`relay-sync@<hostname>`"),
        /// Alerts published to this Amazon SNS standard topic (arn:aws:sns:REGION:ACCOUNT:NAME),
        /// with the severity and host name as message attributes; credentials from AWS's
        /// standard chain (environment, ECS task role, instance profile, profiles); the role
        /// needs sns:Publish and sns:GetTopicAttributes (/usr/share/relay-sync/sns-policy.json).
        /// Bounded by COMMAND_TIMEOUT. Needs a build with the `aws` feature.
        alert_sns_topic_arn "ALERT_SNS_TOPIC_ARN": TopicArn =
            unset.example("arn:aws:sns:eu-central-1:123456789012:relay-sync-alerts"),
        /// The region whose SNS endpoint is used.
        alert_sns_region "ALERT_SNS_REGION": AwsRegion =
            derived("the region in ALERT_SNS_TOPIC_ARN"),
        /// An SNS endpoint URL to use instead, e.g. a VPC interface endpoint's
        /// https://vpce-....sns.REGION.vpce.amazonaws.com; https:// (plain http:// only to a
        /// loopback address such as 127.0.0.1, for a local stand-in).
        alert_sns_endpoint "ALERT_SNS_ENDPOINT": Endpoint = derived("the region's public endpoint"),
        /// Consecutive failed runs before an alert (a failed reload alerts at once).
        alert_after_failures "ALERT_AFTER_FAILURES": Count = default("5"),
        /// relay-sync watch: seconds (fractions allowed) a failure must last before an alert,
        /// instead of ALERT_AFTER_FAILURES; 1500 is the 25 minutes of 5 cron runs.
        alert_after_seconds "ALERT_AFTER_SECONDS": Period = default("1500"),
    }

    section "Watch mode (relay-sync watch)" {
        /// Seconds (fractions allowed) between polls of the change signal: one lookup of when
        /// DB_QUERY's tables were last written (well under a millisecond of database time), and
        /// a fingerprint of what DB_QUERY returns only after a write.
        poll_interval "POLL_INTERVAL": Seconds = default("0.25"),
        /// Seconds between full syncs whatever the signal says (also repairs a main.cf edited by
        /// hand), and the longest back-off of polls while the database is down.
        reconcile_interval "RECONCILE_INTERVAL": Seconds = default("300"),
    }
}
