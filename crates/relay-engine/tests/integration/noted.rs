//! Steady conditions an operator chose (a hand-written transport line, …): a WARN in the run
//! that first sees one, a DEBUG while it stays as it is, a WARN again when it changes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use relay_engine::{run_reported, RunReport, SyncSettings};

use crate::fakes::{FakePostfix, FakeSource};
use crate::settings;

/// Runs one sync with every level captured; returns what the run reported and the log.
fn sync_reported(
    rows: &[&str],
    postfix: &FakePostfix,
    settings: &SyncSettings,
) -> (RunReport, String) {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || crate::Captured(writer.clone()))
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .finish();
    let source = FakeSource::rows(rows);
    let (outcome, report) = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(run_reported(settings, &source, postfix))
    });
    let log = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
    assert!(outcome.is_success(), "{log}");
    (report, log)
}

/// The lines of `log` at `level` that mention a hand-written line.
fn hand_written(log: &str, level: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.trim_start().starts_with(level) && line.contains("hand-written"))
        .map(|line| line.trim().to_owned())
        .collect()
}

#[test]
fn a_hand_written_line_is_a_warn_once_then_debug() {
    let rows = ["a.example", "b.example"];
    let postfix = FakePostfix::new("a.example", Some("a.example smtp:[192.0.2.7]:25\n"));
    let (first, log) = sync_reported(&rows, &postfix, &settings());
    assert_eq!(
        hand_written(&log, "WARN"),
        ["WARN Domain a.example has a hand-written line in hash:/fake/transport outside the managed block; leaving it as it is"],
        "{log}"
    );
    let noted = first.noted.clone().unwrap();
    assert_eq!(noted, BTreeSet::from(["hand-written:a.example".to_owned()]));

    // The next run, which knows it: DEBUG only, and nothing else is a WARN.
    let known = SyncSettings {
        known_noted: Some(noted.clone()),
        ..settings()
    };
    let (second, log) = sync_reported(&rows, &postfix, &known);
    assert!(!log.contains("WARN"), "{log}");
    assert_eq!(hand_written(&log, "DEBUG").len(), 1, "{log}");
    assert_eq!(second.noted, Some(noted.clone()));

    // A second hand-written line: only the new one is a WARN.
    let transport = format!(
        "b.example smtp:[192.0.2.8]:25\n{}",
        postfix.state().transport.unwrap()
    );
    let postfix = FakePostfix::new(&postfix.state().relay_domains, Some(&transport));
    let (third, log) = sync_reported(&rows, &postfix, &known);
    let warned = hand_written(&log, "WARN");
    assert!(
        warned.len() == 1 && warned[0].contains("Domain b.example"),
        "{log}"
    );
    assert_eq!(third.noted.unwrap().len(), 2);
}

/// A run that cannot read the database sees no condition: it reports none, so that the caller
/// keeps what it remembered.
#[test]
fn a_run_without_a_plan_reports_no_conditions() {
    let postfix = FakePostfix::new("a.example", Some("a.example smtp:[192.0.2.7]:25\n"));
    let source = FakeSource::Unreachable;
    let (_, report) = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(run_reported(&settings(), &source, &postfix));
    assert_eq!(report.noted, None);
}
