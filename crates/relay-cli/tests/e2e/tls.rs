//! TLS to MariaDB with the built binary (`DB_TLS`, SPEC §5), against a private server with a
//! throwaway CA whose certificate names `localhost` only (relay-testbed,
//! `MariaDb::start_with_tls`).
//!
//! The session's `Ssl_cipher` is read through the binary itself: `DB_QUERY` adds one row that
//! turns the cipher into a domain-like name (`tls-aes-256-gcm-sha384.cipher.test`, or
//! `plain.cipher.test` without TLS), and `--dry-run` prints it among the domains it would add.

use relay_testbed::MariaDb;

use crate::gateway::Gateway;

/// The default query plus one row naming this session's cipher.
const CIPHER_QUERY: &str = "SELECT name FROM domains WHERE enabled = 1 UNION ALL \
     SELECT IF(VARIABLE_VALUE = '', 'plain.cipher.test', \
               CONCAT(REPLACE(LOWER(VARIABLE_VALUE), '_', '-'), '.cipher.test')) \
     FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'";

/// The `*.cipher.test` name a dry run with `env` reports; panics when the run fails.
fn session_cipher(gw: &Gateway, env: &[(&str, &str)]) -> String {
    let mut env = env.to_vec();
    env.push(("DB_QUERY", CIPHER_QUERY));
    let run = gw.run_env(&["--dry-run"], &env);
    assert_eq!(run.code, 0, "{run:?}");
    let added = run
        .stdout
        .lines()
        .find(|l| l.starts_with("added ("))
        .unwrap_or_else(|| panic!("no added line: {run:?}"));
    let cipher = added
        .split([':', ','])
        .map(str::trim)
        .find(|name| name.ends_with(".cipher.test"))
        .unwrap_or_else(|| panic!("no cipher row: {added}"));
    println!("{:?}: session cipher {cipher}", &env[..env.len() - 1]);
    cipher.to_owned()
}

fn tls_gateway() -> (Gateway, String, String) {
    let db = MariaDb::start_with_tls().unwrap();
    let ca = db.tls_ca().unwrap().display().to_string();
    let untrusted = db.tls_untrusted_ca().unwrap().display().to_string();
    (Gateway::start_on(db, "kuma8088.com", ""), ca, untrusted)
}

/// `required` encrypts (a TLS cipher in the session) without checking the certificate, and a
/// real sync over it applies; `disabled` stays in plain text even when the server offers TLS.
#[test]
fn required_encrypts_and_disabled_stays_plain() {
    let (gw, _, _) = tls_gateway();
    let cipher = session_cipher(&gw, &[("DB_TLS", "required")]);
    assert!(cipher.starts_with("tls-"), "{cipher}");
    assert_eq!(
        session_cipher(&gw, &[("DB_TLS", "disabled")]),
        "plain.cipher.test"
    );
    gw.sync_env_expecting(&[("DB_TLS", "required")], 0);
    assert_eq!(
        gw.relay_domains(),
        "example.com, example.net, example.org, kuma8088.com, shop.example.jp"
    );
}

/// `verify-ca` and `verify-full` accept the right CA (and, for `verify-full`, the right host
/// name); `verify-full` refuses a wrong host name and an unknown CA, and `verify-ca` an
/// unknown CA: exit 3, configuration kept.
#[test]
fn verify_modes_check_the_ca_and_the_host_name() {
    let (gw, ca, untrusted) = tls_gateway();
    let cipher = session_cipher(&gw, &[("DB_TLS", "verify-ca"), ("DB_TLS_CA", &ca)]);
    assert!(cipher.starts_with("tls-"), "verify-ca: {cipher}");
    let full = [
        ("DB_TLS", "verify-full"),
        ("DB_TLS_CA", ca.as_str()),
        ("DB_HOST", "localhost"),
    ];
    let cipher = session_cipher(&gw, &full);
    assert!(cipher.starts_with("tls-"), "verify-full: {cipher}");

    let files = gw.files_before_first_sync();
    for (case, env, reason) in [
        (
            "verify-full, certificate for another name",
            vec![("DB_TLS", "verify-full"), ("DB_TLS_CA", ca.as_str())],
            "not valid for name",
        ),
        (
            "verify-full, unknown CA",
            vec![
                ("DB_TLS", "verify-full"),
                ("DB_TLS_CA", untrusted.as_str()),
                ("DB_HOST", "localhost"),
            ],
            "UnknownIssuer",
        ),
        (
            "verify-ca, unknown CA",
            vec![("DB_TLS", "verify-ca"), ("DB_TLS_CA", untrusted.as_str())],
            "UnknownIssuer",
        ),
    ] {
        let before = gw.log().len();
        let run = gw.run_env(&[], &env);
        let log = gw.log()[before..].to_owned();
        assert_eq!(run.code, 3, "{case}: {run:?}\n{log}");
        assert!(log.contains(reason), "{case}: {reason} not in\n{log}");
        assert!(
            log.contains("ERROR: Keeping current configuration"),
            "{case}\n{log}"
        );
        assert_eq!(gw.files_before_first_sync(), files, "{case}");
    }
    gw.sync_env_expecting(&full, 0);
    assert!(
        gw.log().contains("INFO: Connected to MariaDB (localhost)"),
        "{}",
        gw.log()
    );
}

/// Against a server without TLS, `disabled` works and `required` refuses to go on in plain
/// text (exit 3).
#[test]
fn plaintext_server_disabled_works_required_refuses() {
    let gw = Gateway::start("kuma8088.com", "");
    assert_eq!(
        session_cipher(&gw, &[("DB_TLS", "disabled")]),
        "plain.cipher.test"
    );
    let run = gw.run_env(&[], &[("DB_TLS", "required")]);
    assert_eq!(run.code, 3, "{run:?}\n{}", gw.log());
    assert!(gw.log().contains("does not offer TLS"), "{}", gw.log());
    gw.sync_expecting(0);
}
