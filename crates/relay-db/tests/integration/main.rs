//! `MariaDbSource` against real, private MariaDB servers (relay-testbed).
//!
//! Tests that only read share one plain and one TLS server per test process
//! (`MariaDb::shared`, `MariaDb::shared_with_tls`); tests that stop a server or switch on its
//! general log start their own. A missing `mariadb-server` fails every test with the
//! `apt-get install` command that fixes it.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // Tests set files up by path in their own temporary directories.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_db::{DbError, DbHost, DbSettings, DomainSource, MariaDbSource, Secret, TlsMode};
use relay_testbed::MariaDb;

const PASSWORD: &str = "relay-sync-test-pw";
const DEFAULT_QUERY: &str = "SELECT name FROM domains WHERE enabled = 1";
/// One text column: the cipher of this very connection, empty without TLS.
const CIPHER_QUERY: &str = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
                            WHERE VARIABLE_NAME = 'Ssl_cipher'";

/// The fixtures' settings for `db`: user `relay_sync`, the default query, no TLS, 3 s timeouts.
fn settings(db: &MariaDb) -> DbSettings {
    settings_for(db.host(), db.port())
}

fn settings_for(host: &str, port: u16) -> DbSettings {
    DbSettings {
        hosts: vec![DbHost::new(host)],
        port,
        database: "mailserver_usermgmt".to_owned(),
        user: "relay_sync".to_owned(),
        password: Some(Secret::new(PASSWORD)),
        query: DEFAULT_QUERY.to_owned(),
        recipients_query: None,
        tls: TlsMode::Disabled,
        tls_ca: None,
        connect_timeout: Duration::from_secs(3),
        query_timeout: Duration::from_secs(3),
    }
}

async fn fetch(settings: DbSettings) -> Result<Vec<String>, DbError> {
    MariaDbSource::new(settings).fetch_names().await
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// The cipher the connection made with `settings` used; empty for plain TCP.
async fn cipher(mut settings: DbSettings) -> String {
    settings.query = CIPHER_QUERY.to_owned();
    let mut names = fetch(settings).await.unwrap();
    assert_eq!(names.len(), 1, "one row expected: {names:?}");
    names.remove(0)
}

fn assert_unreachable(result: Result<Vec<String>, DbError>, detail_contains: &str) -> String {
    match result {
        Err(DbError::Unreachable { addr, detail }) => {
            assert!(
                detail.contains(detail_contains),
                "detail {detail:?} lacks {detail_contains:?}"
            );
            addr
        }
        other => panic!("expected Unreachable ({detail_contains}), got {other:?}"),
    }
}

fn assert_query_error(result: Result<Vec<String>, DbError>, detail_contains: &str) {
    match result {
        Err(DbError::Query { detail, .. }) => assert!(
            detail.contains(detail_contains),
            "detail {detail:?} lacks {detail_contains:?}"
        ),
        other => panic!("expected Query ({detail_contains}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading names

#[tokio::test]
async fn fetches_exactly_the_enabled_seed_domains() {
    let db = MariaDb::shared().unwrap();
    let names = fetch(settings(db)).await.unwrap();
    assert_eq!(
        sorted(names),
        [
            "example.com",
            "example.net",
            "example.org",
            "shop.example.jp"
        ]
    );
}

#[tokio::test]
async fn hostile_rows_come_back_raw_without_failing_the_fetch() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    // `\n` is the SQL escape for a newline; X'FF…' is not UTF-8.
    settings.query = r"SELECT 'evil.example\nsmtp:[10.0.0.1]:25' AS name
                       UNION ALL SELECT 'a.example,b.example'
                       UNION ALL SELECT NULL
                       UNION ALL SELECT '  Example.COM.  '
                       UNION ALL SELECT X'FF2E6578616D706C65'"
        .to_owned();
    let names = fetch(settings).await.unwrap();
    assert_eq!(
        sorted(names),
        sorted(vec![
            "evil.example\nsmtp:[10.0.0.1]:25".to_owned(),
            "a.example,b.example".to_owned(),
            String::new(),
            "  Example.COM.  ".to_owned(),
            "\u{FFFD}.example".to_owned(),
        ])
    );
}

#[tokio::test]
async fn an_empty_result_is_an_empty_list() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.query = "SELECT name FROM domains WHERE enabled = 42".to_owned();
    assert_eq!(fetch(settings).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn logs_connected_with_the_configured_host() {
    let db = MariaDb::shared().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Capture(Arc::clone(&events)));
    // A callsite another test's thread met first (with no subscriber) caches "never": have
    // every callsite ask again, so that this thread's subscriber sees its events.
    tracing::callsite::rebuild_interest_cache();
    fetch(settings(db)).await.unwrap();
    let events = events.lock().unwrap();
    assert!(
        events.contains(&"INFO Connected to MariaDB (127.0.0.1)".to_owned()),
        "{events:?}"
    );
}

#[tokio::test]
async fn fetch_sends_one_query_and_nothing_else() {
    let db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    db.start_general_log().unwrap();
    fetch(settings(&db)).await.unwrap();

    let log = db.general_log_of("relay_sync").unwrap();
    assert_eq!(
        relay_testbed::command_types(&log),
        ["Connect", "Query", "Quit"],
        "general log:\n{log}"
    );
    assert!(log.contains(DEFAULT_QUERY), "general log:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// Failures and their classes

#[tokio::test]
async fn wrong_password_is_auth_and_never_shows_the_password() {
    let db = MariaDb::shared().unwrap();
    let wrong = "wrong-pw-Zq9-do-not-print";
    let mut settings = settings(db);
    settings.password = Some(Secret::new(wrong));
    let err = fetch(settings).await.unwrap_err();
    match &err {
        DbError::Auth {
            addr,
            user,
            code,
            detail,
        } => {
            assert_eq!(addr, &format!("127.0.0.1:{}", db.port()));
            assert_eq!(user, "relay_sync");
            assert_eq!(*code, 1045);
            assert!(detail.contains("1045"), "{detail}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(err.is_password_refused(), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong), "password leaked: {text}");
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
    }
}

#[tokio::test]
async fn unknown_database_is_auth() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.database = "no_such_database".to_owned();
    match fetch(settings).await {
        Err(error @ DbError::Auth { .. }) => {
            assert!(error.to_string().contains("no_such_database"), "{error}");
            // A refused database is not a refused password: reading the password again
            // would not help.
            assert!(!error.is_password_refused(), "{error:?}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test]
async fn closed_port_is_unreachable_at_once() {
    let port = relay_testbed::free_port().unwrap();
    let started = Instant::now();
    let addr = assert_unreachable(fetch(settings_for("127.0.0.1", port)).await, "refused");
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn silent_server_is_unreachable_after_the_connect_timeout() {
    // The kernel accepts the TCP connection into the backlog, but nobody ever sends the
    // MariaDB greeting.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = settings_for("127.0.0.1", listener.local_addr().unwrap().port());
    settings.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    assert_unreachable(fetch(settings).await, "connect timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn stopped_server_is_unreachable_and_a_restart_recovers() {
    let mut db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    db.stop().unwrap();
    assert!(!db.is_running());
    assert_unreachable(fetch(settings(&db)).await, "refused");

    db.start_again().unwrap();
    assert!(db.is_running());
    let names = fetch(settings(&db)).await.unwrap();
    assert_eq!(names.len(), 4, "{names:?}");

    db.kill().unwrap();
    assert!(!db.is_running());
    assert_unreachable(fetch(settings(&db)).await, "refused");
}

#[tokio::test]
async fn missing_table_is_a_query_error() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.query = "SELECT name FROM no_such_table".to_owned();
    assert_query_error(fetch(settings).await, "no_such_table");
}

#[tokio::test]
async fn syntax_error_is_a_query_error() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.query = "SELEKT name FROM domains".to_owned();
    assert_query_error(fetch(settings).await, "1064");
}

#[tokio::test]
async fn two_columns_are_a_query_error() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.query = "SELECT name, enabled FROM domains".to_owned();
    assert_query_error(fetch(settings).await, "2 columns");
}

#[tokio::test]
async fn a_statement_without_rows_is_a_query_error() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.query = "DO 1".to_owned();
    assert_query_error(fetch(settings).await, "no result set");
}

#[tokio::test]
async fn two_result_sets_are_a_query_error() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.query = format!("{DEFAULT_QUERY}; {DEFAULT_QUERY}");
    assert_query_error(fetch(settings).await, "more than one result set");
}

#[tokio::test]
async fn slow_query_is_a_query_error_after_the_query_timeout() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.query = "SELECT SLEEP(5)".to_owned();
    settings.query_timeout = Duration::from_secs(1);
    let started = Instant::now();
    assert_query_error(fetch(settings).await, "query timeout (1 s)");
    // Well under 2 s: the fetch must not wait for the running query before it hangs up.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(1900),
        "{elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Recipients (RECIPIENTS_QUERY, opt-in)

const RECIPIENTS_QUERY: &str = "SELECT email FROM users WHERE enabled = 1";

fn assert_query_error_of<T: std::fmt::Debug>(result: Result<T, DbError>, detail_contains: &str) {
    let detail = query_detail(result);
    assert!(
        detail.contains(detail_contains),
        "detail {detail:?} lacks {detail_contains:?}"
    );
}

/// With the opt-in grant, one fetch reads both lists over one connection: a login, the two
/// queries, a goodbye. `fetch_names` still runs `DB_QUERY` alone. A user enabled or disabled
/// changes the change signal, which equals the fingerprint of what a fetch read, and the probe
/// sees the write to `users`.
#[tokio::test]
async fn recipients_are_fetched_on_the_same_connection_and_signalled() {
    use relay_db::ChangeSignal;
    let db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    db.grant_recipients().unwrap();
    let mut settings = settings(&db);
    settings.recipients_query = Some(RECIPIENTS_QUERY.to_owned());
    let source = MariaDbSource::new(settings);

    db.start_general_log().unwrap();
    let fetched = source.fetch().await.unwrap();
    let log = db.general_log_of("relay_sync").unwrap();
    assert_eq!(
        relay_testbed::command_types(&log),
        ["Connect", "Query", "Query", "Quit"],
        "general log:\n{log}"
    );
    assert_eq!(
        sorted(fetched.names.clone()),
        [
            "example.com",
            "example.net",
            "example.org",
            "shop.example.jp"
        ]
    );
    assert_eq!(
        sorted(fetched.recipients.clone().unwrap()),
        [
            "@example.org",
            "alice@example.com",
            "bob@example.com",
            "carol@example.net",
            "erin@old.example"
        ]
    );
    assert_eq!(source.fetch_names().await.unwrap(), fetched.names);

    let mut signal = ChangeSignal::new(source.clone()).unwrap();
    assert!(signal.can_probe());
    let before = signal.poll().await.unwrap();
    assert_eq!(before, fetched.fingerprint());
    assert_eq!(before.rows, 9);

    db.sql("UPDATE mailserver_usermgmt.users SET enabled = 0 WHERE email = 'bob@example.com'")
        .unwrap();
    let probe = signal.probe().await.unwrap().unwrap();
    assert_eq!((probe.unknown, probe.opaque), (0, 0), "{probe:?}");
    assert!(probe.now - probe.updated.unwrap() < 5, "{probe:?}");
    let disabled = signal.poll().await.unwrap();
    assert_ne!(disabled, before);
    assert_eq!(disabled, source.fetch().await.unwrap().fingerprint());

    db.sql("INSERT INTO mailserver_usermgmt.users (email) VALUES ('frank@example.net')")
        .unwrap();
    let added = signal.poll().await.unwrap();
    assert_ne!(added, disabled);
    assert_eq!(added, source.fetch().await.unwrap().fingerprint());
    signal.close().await;
}

/// Without the opt-in grant the server refuses the users table, and the error says the
/// recipients query was at fault.
#[tokio::test]
async fn a_refused_recipients_query_is_a_query_error_naming_it() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.recipients_query = Some(RECIPIENTS_QUERY.to_owned());
    let source = MariaDbSource::new(settings);
    assert_query_error_of(source.fetch().await, "(RECIPIENTS_QUERY)");
    // DB_QUERY alone still works.
    assert_eq!(source.fetch_names().await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_bad_recipients_query_is_a_query_error_naming_it() {
    let db = MariaDb::shared().unwrap();
    for (query, says) in [
        ("SELECT email FROM no_such_table", "no_such_table"),
        ("SELEKT email FROM users", "syntax"),
        (
            "SELECT 'alice@example.com', 'enabled'",
            "the query returned 2 columns; it must return exactly one (RECIPIENTS_QUERY)",
        ),
        (
            "SELECT 'a@example.com'; SELECT 'b@example.com'",
            "(RECIPIENTS_QUERY)",
        ),
    ] {
        let mut settings = settings(db);
        settings.recipients_query = Some(query.to_owned());
        let detail = query_detail(MariaDbSource::new(settings).fetch().await);
        assert!(
            detail.contains(says) && detail.contains("RECIPIENTS_QUERY"),
            "{query}: {detail}"
        );
    }
    // A failing DB_QUERY still names no key besides its own (as before), and stops the fetch.
    let mut settings = settings(db);
    settings.query = "SELECT name, enabled FROM domains".to_owned();
    settings.recipients_query = Some("SELECT 'a@example.com'".to_owned());
    assert_query_error_of(
        MariaDbSource::new(settings).fetch().await,
        "it must return exactly one (DB_QUERY)",
    );
}

/// Rows of the recipients query come back raw, like the names: a `NULL` as the empty string.
#[tokio::test]
async fn hostile_recipient_rows_come_back_raw() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.recipients_query =
        Some(r"SELECT 'a@example.com\nb@example.com' UNION ALL SELECT NULL".to_owned());
    let fetched = MariaDbSource::new(settings).fetch().await.unwrap();
    assert_eq!(
        sorted(fetched.recipients.unwrap()),
        ["", "a@example.com\nb@example.com"]
    );
}

fn query_detail<T: std::fmt::Debug>(result: Result<T, DbError>) -> String {
    match result {
        Err(DbError::Query { detail, .. }) => detail,
        other => panic!("expected Query, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// TLS against a server without TLS

#[tokio::test]
async fn tls_disabled_connects_in_plain_text() {
    let db = MariaDb::shared().unwrap();
    assert_eq!(cipher(settings(db)).await, "");
}

#[tokio::test]
async fn tls_required_fails_when_the_server_has_no_tls() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.tls = TlsMode::Required;
    assert_unreachable(fetch(settings).await, "does not offer TLS");
}

#[tokio::test]
async fn tls_preferred_falls_back_to_plain_text() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.tls = TlsMode::Preferred;
    assert_eq!(cipher(settings.clone()).await, "");
    // The source says the fallback happened, for `check`; the run's log says it as a WARN.
    let source = MariaDbSource::new(settings);
    assert_eq!(source.protection(), None);
    assert_eq!(source.fetch_names().await.unwrap().len(), 4);
    assert_eq!(source.protection(), Some(relay_db::Protection::Plain));
}

#[tokio::test]
async fn missing_ca_file_is_unreachable_and_named() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.tls = TlsMode::VerifyFull;
    settings.tls_ca = Some(PathBuf::from("/nonexistent/relay-sync-ca.pem"));
    assert_unreachable(fetch(settings).await, "/nonexistent/relay-sync-ca.pem");
}

#[tokio::test]
async fn ca_file_without_a_certificate_is_unreachable_and_named() {
    let db = MariaDb::shared().unwrap();
    let mut settings = settings(db);
    settings.tls = TlsMode::VerifyCa;
    // Any readable file that holds no PEM certificate.
    let not_a_ca = relay_testbed::fixtures_dir().join("sql/seed.sql");
    settings.tls_ca = Some(not_a_ca.clone());
    assert_unreachable(fetch(settings).await, "holds no PEM certificate");
}

// ---------------------------------------------------------------------------------------------
// DB_HOST with several hosts: tried in order, each under the connect timeout.

/// `settings` with `hosts` (each `host:port`) as DB_HOST.
fn listing(mut settings: DbSettings, hosts: &[(&str, u16)]) -> DbSettings {
    settings.hosts = hosts
        .iter()
        .map(|(name, port)| DbHost::new(*name).with_port(*port))
        .collect();
    settings
}

/// A first host that refuses the connection is passed over at once: the second is read, the
/// log says which host answered (as DB_HOST writes it) and why the first was passed over.
#[tokio::test]
async fn a_host_list_reads_the_first_host_that_answers() {
    let db = MariaDb::shared().unwrap();
    let closed = relay_testbed::free_port().unwrap();
    let settings = listing(
        settings(db),
        &[("127.0.0.1", closed), ("127.0.0.1", db.port())],
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Capture(Arc::clone(&events)));
    // A callsite another test's thread met first (with no subscriber) caches "never": have
    // every callsite ask again, so that this thread's subscriber sees its events.
    tracing::callsite::rebuild_interest_cache();
    let source = MariaDbSource::new(settings);
    let started = Instant::now();
    assert_eq!(source.fetch_names().await.unwrap().len(), 4);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        source.answered(),
        Some(&DbHost::new("127.0.0.1").with_port(db.port()))
    );
    let events = events.lock().unwrap();
    let connected = format!("INFO Connected to MariaDB (127.0.0.1:{})", db.port());
    assert!(events.contains(&connected), "{events:?}");
    let passed_over = events
        .iter()
        .find(|line| line.starts_with("WARN cannot reach MariaDB at"))
        .unwrap_or_else(|| panic!("no WARN for the first host: {events:?}"));
    assert!(
        passed_over.contains(&format!("127.0.0.1:{closed}"))
            && passed_over.contains(&format!(
                "trying 127.0.0.1:{} (2nd host of DB_HOST)",
                db.port()
            )),
        "{passed_over}"
    );
}

/// A first host that accepts TCP but never speaks (a hung server, a stalled link) costs one
/// connect timeout, then the second host is read.
#[tokio::test]
async fn a_silent_first_host_costs_one_connect_timeout() {
    let db = MariaDb::shared().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap().port();
    let mut settings = listing(
        settings(db),
        &[("127.0.0.1", silent), ("127.0.0.1", db.port())],
    );
    settings.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    assert_eq!(fetch(settings).await.unwrap().len(), 4);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

/// When no host answers, the error names each one and what it said.
#[tokio::test]
async fn every_host_failing_names_each_of_them() {
    let (a, b) = (
        relay_testbed::free_port().unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let b_port = b.local_addr().unwrap().port();
    let mut settings = settings_for("127.0.0.1", 1);
    settings = listing(settings, &[("127.0.0.1", a), ("127.0.0.1", b_port)]);
    settings.connect_timeout = Duration::from_millis(300);
    let error = fetch(settings).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot reach MariaDB at 127.0.0.1:{a} or 127.0.0.1:{b_port}: 127.0.0.1:{a}: "
        )),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.contains(&format!(
            "; 127.0.0.1:{b_port}: no connection within the connect timeout"
        )),
        "{text}"
    );
}

/// A host that refuses the login makes the whole failure an `Auth` error (a password or a
/// grant to fix), naming that host, the others in its detail.
#[tokio::test]
async fn a_refused_login_on_any_host_is_auth() {
    let db = MariaDb::shared().unwrap();
    let closed = relay_testbed::free_port().unwrap();
    let mut settings = listing(
        settings(db),
        &[("127.0.0.1", closed), ("127.0.0.1", db.port())],
    );
    settings.password = Some(Secret::new("wrong-pw-not-shown"));
    match fetch(settings).await.unwrap_err() {
        DbError::Auth { addr, detail, .. } => {
            assert_eq!(addr, format!("127.0.0.1:{}", db.port()));
            assert!(detail.contains("1045"), "{detail}");
            assert!(
                detail.contains(&format!("also tried 127.0.0.1:{closed}: ")),
                "{detail}"
            );
            assert!(!detail.contains("wrong-pw-not-shown"), "{detail}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

/// verify-full checks each host against its own name: the server's certificate names
/// `localhost`, so `127.0.0.1` is refused and `localhost`, next in the list, is read.
#[tokio::test]
async fn verify_full_checks_each_host_against_its_own_name() {
    let db = MariaDb::shared_with_tls().unwrap();
    let mut settings = tls_settings(db, "127.0.0.1", TlsMode::VerifyFull, trusted_ca(db));
    settings = listing(
        settings,
        &[("127.0.0.1", db.port()), ("localhost", db.port())],
    );
    let source = MariaDbSource::new(settings.clone());
    assert_eq!(source.fetch_names().await.unwrap().len(), 4);
    assert_eq!(
        source.answered().map(|host| host.name.as_str()),
        Some("localhost")
    );
    assert_eq!(
        source.protection(),
        Some(relay_db::Protection::TlsVerifiedFull)
    );
    // Alone, the first is refused for its name.
    settings.hosts.truncate(1);
    assert_unreachable(fetch(settings).await, "not valid for name");
}

// ---------------------------------------------------------------------------------------------
// TLS against a server with TLS: its certificate is signed by `tls_ca` and names `localhost`
// only, so connecting to 127.0.0.1 presents a trusted certificate for another name.

fn tls_settings(db: &MariaDb, host: &str, mode: TlsMode, ca: Option<PathBuf>) -> DbSettings {
    let mut settings = settings_for(host, db.port());
    settings.tls = mode;
    settings.tls_ca = ca;
    settings
}

fn trusted_ca(db: &MariaDb) -> Option<PathBuf> {
    Some(db.tls_ca().unwrap().to_owned())
}

fn untrusted_ca(db: &MariaDb) -> Option<PathBuf> {
    Some(db.tls_untrusted_ca().unwrap().to_owned())
}

#[tokio::test]
async fn tls_disabled_stays_plain_with_a_tls_server() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "127.0.0.1", TlsMode::Disabled, None);
    assert_eq!(cipher(settings).await, "");
}

#[tokio::test]
async fn tls_preferred_encrypts_when_offered() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "127.0.0.1", TlsMode::Preferred, None);
    assert_ne!(cipher(settings.clone()).await, "");
    let source = MariaDbSource::new(settings);
    source.fetch_names().await.unwrap();
    assert_eq!(
        source.protection(),
        Some(relay_db::Protection::TlsUnverified)
    );
}

#[tokio::test]
async fn tls_required_encrypts_without_checking_the_certificate() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "127.0.0.1", TlsMode::Required, None);
    assert_ne!(cipher(settings.clone()).await, "");
    assert_eq!(fetch(settings).await.unwrap().len(), 4);
}

#[tokio::test]
async fn verify_full_accepts_a_trusted_certificate_naming_the_host() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "localhost", TlsMode::VerifyFull, trusted_ca(db));
    assert_ne!(cipher(settings).await, "");
}

#[tokio::test]
async fn verify_full_rejects_a_trusted_certificate_for_another_name() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "127.0.0.1", TlsMode::VerifyFull, trusted_ca(db));
    assert_unreachable(fetch(settings).await, "not valid for name");
}

#[tokio::test]
async fn verify_full_rejects_an_untrusted_certificate() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "localhost", TlsMode::VerifyFull, untrusted_ca(db));
    assert_unreachable(fetch(settings).await, "UnknownIssuer");
}

#[tokio::test]
async fn verify_ca_accepts_a_trusted_certificate_for_another_name() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "127.0.0.1", TlsMode::VerifyCa, trusted_ca(db));
    assert_ne!(cipher(settings.clone()).await, "");
    assert_eq!(fetch(settings).await.unwrap().len(), 4);
}

#[tokio::test]
async fn verify_ca_rejects_an_untrusted_certificate() {
    let db = MariaDb::shared_with_tls().unwrap();
    let settings = tls_settings(db, "127.0.0.1", TlsMode::VerifyCa, untrusted_ca(db));
    assert_unreachable(fetch(settings).await, "UnknownIssuer");
}

// ---------------------------------------------------------------------------------------------
// A minimal tracing subscriber that records `LEVEL message` for every event.

struct Capture(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    let _ = write!(self.0, "{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let line = format!("{} {}", event.metadata().level(), message.0);
        self.0.lock().unwrap().push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------------------------------------
// The watcher's change signal

/// The database's fingerprint equals the one computed from the fetched names, for the fixtures
/// and for hostile rows (a `NULL`, a newline, spaces), so the watcher can compare what it polls
/// with what it applied.
#[tokio::test]
async fn signal_fingerprint_equals_the_fetched_names_fingerprint() {
    use relay_db::{ChangeSignal, Fingerprint};
    let db = MariaDb::shared().unwrap();
    for query in [
        DEFAULT_QUERY,
        r"SELECT 'evil.example\nsmtp:[10.0.0.1]:25' AS name
          UNION ALL SELECT NULL UNION ALL SELECT '  Example.COM.  '",
        "SELECT name FROM domains WHERE enabled = 42",
    ] {
        let mut settings = settings(db);
        settings.query = query.to_owned();
        let names = fetch(settings.clone()).await.unwrap();
        let mut signal = ChangeSignal::new(MariaDbSource::new(settings)).unwrap();
        let polled = signal.poll().await.unwrap();
        assert_eq!(
            polled,
            Fingerprint::of(names.iter().map(String::as_str)),
            "{query}"
        );
        // The kept connection answers a second poll the same.
        assert_eq!(signal.poll().await.unwrap(), polled, "{query}");
        signal.close().await;
    }
}

/// A name the database stores in latin1 (or UTF-16, or as bytes) reaches relay-sync as UTF-8:
/// the connection asks for utf8mb4 results. The signal hashes the same UTF-8 bytes, so the
/// fingerprint the watcher polls equals the one of the rows a sync read; hashing the stored
/// latin1 bytes, every poll after a write to such a table differed, and each caused a sync.
#[tokio::test]
async fn signal_hashes_the_utf8_a_fetch_reads_whatever_the_column_charset() {
    use relay_db::{ChangeSignal, Fingerprint};
    let db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    db.grant_recipients().unwrap();
    db.sql(
        "ALTER TABLE mailserver_usermgmt.domains CONVERT TO CHARACTER SET latin1; \
         ALTER TABLE mailserver_usermgmt.users CONVERT TO CHARACTER SET latin1; \
         INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('bücher.example', 1); \
         INSERT INTO mailserver_usermgmt.users (email) VALUES ('jürgen@bücher.example')",
    )
    .unwrap();
    let mut settings = settings(&db);
    settings.recipients_query = Some(RECIPIENTS_QUERY.to_owned());
    let source = MariaDbSource::new(settings.clone());
    let fetched = source.fetch().await.unwrap();
    assert!(
        fetched.names.iter().any(|n| n == "bücher.example"),
        "{fetched:?}"
    );
    let mut signal = ChangeSignal::new(source).unwrap();
    assert_eq!(signal.poll().await.unwrap(), fetched.fingerprint());
    signal.close().await;

    for query in [
        "SELECT CONVERT('bücher.example' USING latin1)",
        "SELECT CONVERT('bücher.example' USING utf16)",
        "SELECT CAST('bücher.example' AS BINARY)",
        "SELECT 42",
    ] {
        settings.query = query.to_owned();
        settings.recipients_query = None;
        let names = fetch(settings.clone()).await.unwrap();
        let mut signal = ChangeSignal::new(MariaDbSource::new(settings.clone())).unwrap();
        assert_eq!(
            signal.poll().await.unwrap(),
            Fingerprint::of(names.iter().map(String::as_str)),
            "{query}: {names:?}"
        );
        signal.close().await;
    }
}

/// A poll on a kept connection is one `COM_QUERY`: no login, no other statement.
#[tokio::test]
async fn signal_polls_are_one_query_each_on_one_connection() {
    use relay_db::ChangeSignal;
    let db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    db.start_general_log().unwrap();
    let mut signal = ChangeSignal::new(MariaDbSource::new(settings(&db))).unwrap();
    for _ in 0..3 {
        signal.poll().await.unwrap();
    }
    signal.close().await;
    let log = db.general_log_of("relay_sync").unwrap();
    assert_eq!(
        relay_testbed::command_types(&log),
        ["Connect", "Query", "Query", "Query", "Quit"],
        "general log:\n{log}"
    );
}

/// A kept connection the server closed since the last poll (a restart, a proxy's idle limit)
/// is no outage: the poll reconnects once and answers.
#[tokio::test]
async fn signal_reconnects_when_the_kept_connection_was_closed() {
    use relay_db::ChangeSignal;
    let db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    let mut signal = ChangeSignal::new(MariaDbSource::new(settings(&db))).unwrap();
    let first = signal.poll().await.unwrap();
    let ids = db
        .sql("SELECT id FROM information_schema.PROCESSLIST WHERE user = 'relay_sync'")
        .unwrap();
    let ids: Vec<&str> = ids
        .lines()
        .filter(|l| l.trim().parse::<u64>().is_ok())
        .collect();
    assert_eq!(ids.len(), 1, "one kept connection expected: {ids:?}");
    db.sql(&format!("KILL {}", ids[0])).unwrap();
    assert_eq!(signal.poll().await.unwrap(), first);
}

/// The watcher's kept connection on a list: when its host goes away, the poll moves to the next
/// host at once; when the first host answers again, the signal returns to it, but only once it
/// answers with the same domains (a replica that comes back behind is not read until it has
/// caught up).
#[tokio::test]
async fn signal_falls_back_along_the_list_and_returns_when_the_first_host_has_caught_up() {
    use relay_db::ChangeSignal;
    let mut first = MariaDb::start().unwrap();
    first.load_fixtures().unwrap();
    let second = MariaDb::start().unwrap();
    second.load_fixtures().unwrap();
    let settings = listing(
        settings(&first),
        &[("127.0.0.1", first.port()), ("127.0.0.1", second.port())],
    );
    let every = Duration::from_millis(200);
    let mut signal = ChangeSignal::new(MariaDbSource::new(settings.clone()))
        .unwrap()
        .with_return_interval(every);
    let on = |signal: &ChangeSignal| signal.host().and_then(|host| host.port);
    let fingerprint = signal.poll().await.unwrap();
    assert_eq!(on(&signal), Some(first.port()));

    // The first host goes away: the same poll reads the second.
    first.stop().unwrap();
    assert_eq!(signal.poll().await.unwrap(), fingerprint);
    assert_eq!(on(&signal), Some(second.port()));

    // It comes back behind (a row the second has and it has not): the signal stays.
    first.start_again().unwrap();
    second
        .sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'")
        .unwrap();
    let changed = signal.poll().await.unwrap();
    assert_ne!(changed, fingerprint);
    for _ in 0..10 {
        tokio::time::sleep(every).await;
        assert_eq!(signal.poll().await.unwrap(), changed);
        assert_eq!(
            on(&signal),
            Some(second.port()),
            "returned to a host that is behind"
        );
    }

    // It catches up: the signal returns to it within a few intervals.
    first
        .sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while on(&signal) != Some(first.port()) {
        assert!(
            Instant::now() < deadline,
            "never returned to the first host"
        );
        tokio::time::sleep(every).await;
        assert_eq!(signal.poll().await.unwrap(), changed);
    }
    signal.close().await;
}

/// The probe reads the server's `UPDATE_TIME` for the domains table: a write moves it to the
/// second of its commit, and the server's clock comes with it.
#[tokio::test]
async fn probe_sees_a_write_in_update_time() {
    use relay_db::ChangeSignal;
    let db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    let mut signal = ChangeSignal::new(MariaDbSource::new(settings(&db))).unwrap();
    assert!(signal.can_probe());
    let before = signal.probe().await.unwrap().unwrap();
    db.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'")
        .unwrap();
    let after = signal.probe().await.unwrap().unwrap();
    assert_eq!((after.unknown, after.opaque), (0, 0), "{after:?}");
    let updated = after.updated.unwrap();
    assert!(updated <= after.now && after.now - updated < 5, "{after:?}");
    assert!(
        before.updated.is_none_or(|b| b <= updated),
        "{before:?} {after:?}"
    );

    // A query whose tables cannot be told has no probe; the fingerprint still works.
    let mut custom = settings(&db);
    custom.query = "SELECT name FROM (SELECT name FROM domains WHERE enabled = 1) AS d".to_owned();
    let mut signal = ChangeSignal::new(MariaDbSource::new(custom)).unwrap();
    assert!(!signal.can_probe());
    assert_eq!(signal.probe().await.unwrap(), None);
    assert_eq!(signal.poll().await.unwrap().rows, 5);
}

/// A view hides the writes to its base tables from `UPDATE_TIME`: the probe says it is opaque
/// (the watcher then computes the fingerprint at every poll).
#[tokio::test]
async fn probe_of_a_view_is_opaque() {
    use relay_db::ChangeSignal;
    let db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    db.sql(
        "CREATE VIEW mailserver_usermgmt.enabled_domains AS \
         SELECT name FROM mailserver_usermgmt.domains WHERE enabled = 1; \
         GRANT SELECT ON mailserver_usermgmt.enabled_domains TO 'relay_sync'@'127.0.0.1';",
    )
    .unwrap();
    let mut view = settings(&db);
    view.query = "SELECT name FROM enabled_domains".to_owned();
    let mut signal = ChangeSignal::new(MariaDbSource::new(view)).unwrap();
    let probe = signal.probe().await.unwrap().unwrap();
    assert_eq!(probe.opaque, 1, "{probe:?}");
}
