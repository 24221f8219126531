//! Alerts to Amazon SNS (issue 15) with the built binary, against relay-testbed's stand-in SNS
//! endpoint on loopback, which checks each request's SigV4 signature and records what is
//! published. The binary gets static test credentials from the environment and IMDS is
//! switched off, so nothing leaves loopback.
//!
//! With the `aws` feature: a reload failure publishes one critical message, the 5th failure a
//! warning, recovery a notice; a failing endpoint leaves the exit code alone and the alert is
//! published by a later run; a hung endpoint is abandoned at COMMAND_TIMEOUT; `check` reports
//! credentials and topic access. Without it: the binary refuses `ALERT_SNS_TOPIC_ARN`.

#[cfg(feature = "aws")]
mod with_feature {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use relay_testbed::{SnsBehaviour, SnsStandIn};

    use crate::gateway::Gateway;

    const ARN: &str = "arn:aws:sns:eu-central-1:123456789012:relay-sync-alerts";
    const REGION: &str = "eu-central-1";
    const ACCESS_KEY_ID: &str = "AKIDRELAYSYNCTEST01";
    const SECRET: &str = "relay-sync/test+secret-0123456789abcdefghij";

    /// A gateway that alerts to `sns` only, with the test credentials in its environment.
    fn sns_gateway(sns: &SnsStandIn, extra: &str) -> Gateway {
        let mut gw = Gateway::start(
            "kuma8088.com",
            &format!(
                "ALERT_SNS_TOPIC_ARN={ARN}\nALERT_SNS_ENDPOINT={}\n{extra}",
                sns.endpoint()
            ),
        );
        let home = gw.dir.path().join("no-aws-home");
        gw.env = [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            // Nothing may try 169.254.169.254, or read a developer's ~/.aws.
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", home.join("config").display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                home.join("credentials").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        gw
    }

    fn stand_in() -> SnsStandIn {
        SnsStandIn::start(ACCESS_KEY_ID, SECRET, REGION).unwrap()
    }

    fn host_name() -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Every request the stand-in saw was signed right.
    fn all_signed(sns: &SnsStandIn) {
        for seen in sns.seen() {
            assert_eq!(seen.signature_problem, None, "{seen:?}");
        }
    }

    /// No credential anywhere an operator or a log collector can read.
    fn no_credentials_shown(gw: &Gateway, outputs: &str) {
        let status = gw.run(&["status"]);
        let json = gw.run(&["status", "--json"]);
        let text = format!("{}{outputs}{status:?}{json:?}", gw.log());
        for secret in [SECRET, ACCESS_KEY_ID] {
            assert!(!text.contains(secret), "{secret} shown in\n{text}");
        }
    }

    /// One gateway through a reload failure (critical), its recovery (notice), a database
    /// outage to the 5th failure (warning) and its recovery: each alert published once, with
    /// the subject, message and attributes of the alert.
    #[test]
    fn reload_failure_streak_and_recovery_are_published() {
        let sns = stand_in();
        let mut gw = sns_gateway(&sns, "ALERT_AFTER_FAILURES=5");
        let host = host_name();
        let attributes = |severity: &str| {
            BTreeMap::from([
                ("host".to_owned(), host.clone()),
                ("severity".to_owned(), severity.to_owned()),
            ])
        };
        let mut outputs = String::new();
        outputs.push_str(&format!("{:?}", gw.sync_expecting(0)));
        assert!(sns.published().is_empty());

        gw.sql(
            "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('late.example', 1)",
        );
        gw.postfix.stop().unwrap();
        outputs.push_str(&format!("{:?}", gw.sync_expecting(6)));
        let published = sns.published();
        assert_eq!(published.len(), 1, "{published:#?}\n{}", gw.log());
        let critical = &published[0];
        assert_eq!(critical.topic_arn, ARN);
        assert_eq!(
            critical.subject,
            format!("relay-sync on {host}: CRITICAL, manual intervention required")
        );
        assert!(
            critical
                .message
                .starts_with(&format!("relay-sync on {host} could not reload Postfix")),
            "{}",
            critical.message
        );
        // The commands to run are written for this instance, as an operator pastes them.
        let pf = gw.postfix.config_dir().display().to_string();
        assert!(
            critical.message.contains(&format!(
                "Check `postfix -c {pf} status` and `postconf -c {pf} -h relay_domains`"
            )),
            "{}",
            critical.message
        );
        assert_eq!(critical.attributes, attributes("critical"));
        assert!(
            gw.log()
                .contains(&format!("INFO: Alert published to SNS topic {ARN}: ")),
            "{}",
            gw.log()
        );

        gw.postfix.start_again().unwrap();
        outputs.push_str(&format!("{:?}", gw.sync_expecting(0)));
        let published = sns.published();
        assert_eq!(published.len(), 2, "{published:#?}");
        assert_eq!(
            published[1].subject,
            format!("relay-sync on {host}: recovered")
        );
        assert_eq!(published[1].attributes, attributes("recovery"));

        gw.db.stop().unwrap();
        for run in 1..=5 {
            outputs.push_str(&format!("{:?}", gw.sync_expecting(3)));
            let expected = if run < 5 { 2 } else { 3 };
            assert_eq!(sns.published().len(), expected, "run {run}");
        }
        let warning = &sns.published()[2];
        assert_eq!(
            warning.subject,
            format!("relay-sync on {host}: 5 consecutive failed runs")
        );
        assert!(
            warning.message.starts_with(&format!(
                "relay-sync on {host} has failed 5 times in a row (exit 3)"
            )),
            "{}",
            warning.message
        );
        assert_eq!(warning.attributes, attributes("warning"));

        gw.db.start_again().unwrap();
        outputs.push_str(&format!("{:?}", gw.sync_expecting(0)));
        let published = sns.published();
        assert_eq!(published.len(), 4, "{published:#?}");
        assert_eq!(published[3].attributes, attributes("recovery"));
        // Every request was a signed Publish, and every one was taken.
        assert_eq!(sns.seen().len(), 4, "{:?}", sns.seen());
        assert!(sns.seen().iter().all(|seen| seen.action == "Publish"));
        all_signed(&sns);
        no_credentials_shown(&gw, &outputs);
    }

    /// A 500 from SNS is logged; the run's exit code stays 3, and the alert waits in the outbox
    /// until a later run publishes it.
    #[test]
    fn a_failing_endpoint_keeps_the_exit_code_and_a_later_run_publishes() {
        let sns = stand_in();
        sns.set_behaviour(SnsBehaviour::Fail500);
        let mut gw = sns_gateway(&sns, "ALERT_AFTER_FAILURES=1");
        gw.db.stop().unwrap();
        let failed = gw.sync_expecting(3);
        assert!(sns.published().is_empty());
        assert_eq!(sns.seen().len(), 1, "one attempt, no retry inside the run");
        let log = gw.log();
        assert!(
            log.contains(&format!("ERROR: Alert to SNS topic {ARN} failed: ")),
            "{log}"
        );
        assert!(gw.dir.path().join("state/alerts.pending").exists());

        sns.set_behaviour(SnsBehaviour::Accept);
        let retried = gw.sync_expecting(3);
        let published = sns.published();
        assert_eq!(published.len(), 1, "{published:#?}\n{}", gw.log());
        assert_eq!(published[0].attributes["severity"], "warning");
        assert!(published[0]
            .subject
            .ends_with(": 1 consecutive failed runs"));
        assert!(gw
            .log()
            .contains("INFO: Retrying an alert not delivered before: "));
        assert!(!gw.dir.path().join("state/alerts.pending").exists());
        all_signed(&sns);
        no_credentials_shown(&gw, &format!("{failed:?}{retried:?}"));
    }

    /// An endpoint that never answers holds the run no longer than COMMAND_TIMEOUT, however
    /// many alerts are due; they are kept for a later run.
    #[test]
    fn a_hung_endpoint_is_abandoned_within_its_timeout() {
        let sns = stand_in();
        sns.set_behaviour(SnsBehaviour::Hang);
        let mut gw = sns_gateway(&sns, "ALERT_AFTER_FAILURES=1\nCOMMAND_TIMEOUT=2");
        gw.db.stop().unwrap();
        let started = Instant::now();
        gw.sync_expecting(3);
        let took = started.elapsed();
        assert_eq!(sns.seen().len(), 1, "the request reached the endpoint");
        // At least the timeout (the endpoint did hang), and not much more: the database is
        // refused at once, and the rest of the run is a few milliseconds.
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(6),
            "{took:?}\n{}",
            gw.log()
        );
        let log = gw.log();
        assert!(
            log.contains(&format!(
                "ERROR: Alert to SNS topic {ARN} failed: no answer from {} within 2s \
                 (COMMAND_TIMEOUT); abandoned",
                sns.endpoint()
            )),
            "{log}"
        );
        assert!(gw.dir.path().join("state/alerts.pending").exists());

        // The next run has two alerts for SNS, the one kept and the 2nd failure's warning: the
        // first waits for the timeout again, the second is not tried (HOLD_OFF), so the run
        // waits once, not once per alert.
        gw.edit_config(|text| text.replace("ALERT_AFTER_FAILURES=1", "ALERT_AFTER_FAILURES=2"));
        let started = Instant::now();
        gw.sync_expecting(3);
        let took = started.elapsed();
        assert_eq!(sns.seen().len(), 2, "one more request, not two");
        assert!(took < Duration::from_secs(6), "{took:?}\n{}", gw.log());
        let log = gw.log();
        assert!(
            log.contains(&format!(
                "ERROR: Alert to SNS topic {ARN} failed: not tried: {} did not answer",
                sns.endpoint()
            )),
            "{log}"
        );
        let pending = std::fs::read_to_string(gw.dir.path().join("state/alerts.pending")).unwrap();
        assert!(
            pending.contains(": 1 consecutive failed runs")
                && pending.contains(": 2 consecutive failed runs"),
            "{pending}"
        );
    }

    /// With `-v`, a run that publishes an alert and a `check` that signs a request log DEBUG
    /// lines, but none of the SDK's own: no line names the access key ID (the SDK's DEBUG
    /// lines print the credentials it resolved, the secret redacted, the key ID not).
    #[test]
    fn verbose_runs_never_log_the_access_key_id() {
        let sns = stand_in();
        let mut gw = sns_gateway(&sns, "ALERT_AFTER_FAILURES=1");
        gw.db.stop().unwrap();
        let run = gw.run(&["-v"]);
        assert_eq!(run.code, 3, "{run:?}");
        assert_eq!(sns.published().len(), 1, "{}", gw.log());
        let check = gw.run(&["-v", "check"]);
        let log = gw.log();
        assert!(log.contains("DEBUG: "), "-v logs DEBUG lines: {log}");
        for shown in [&log, &run.stderr, &check.stderr, &check.stdout] {
            assert!(!shown.contains(ACCESS_KEY_ID), "key ID logged:\n{shown}");
            assert!(!shown.contains(SECRET), "secret logged:\n{shown}");
        }
        no_credentials_shown(&gw, &format!("{run:?}{check:?}"));
    }

    /// `check`'s two SNS items from `check --json`: (status, detail) by name.
    fn sns_items(gw: &Gateway) -> (i32, BTreeMap<String, (String, String)>) {
        let run = gw.run(&["check", "--json"]);
        let value: serde_json::Value = crate::json::document(&run.stdout);
        let items = value["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["name"].as_str().unwrap().starts_with("sns"))
            .map(|item| {
                (
                    item["name"].as_str().unwrap().to_owned(),
                    (
                        item["status"].as_str().unwrap().to_owned(),
                        item["detail"].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect();
        (run.code, items)
    }

    /// `check` against an endpoint that allows the role, one that denies it, and without
    /// credentials; a denied Publish names sns:Publish in the log.
    #[test]
    fn check_reports_credentials_and_topic_access() {
        let sns = stand_in();
        let mut gw = sns_gateway(&sns, "ALERT_AFTER_FAILURES=1");
        let (code, items) = sns_items(&gw);
        assert_eq!(code, 0, "{items:?}");
        assert_eq!(items["sns_credentials"].0, "ok", "{items:?}");
        assert_eq!(items["sns_topic"].0, "ok", "{items:?}");
        assert!(items["sns_topic"].1.starts_with(ARN), "{items:?}");
        assert_eq!(sns.seen().len(), 1);
        assert_eq!(sns.seen()[0].action, "GetTopicAttributes");
        all_signed(&sns);

        sns.set_behaviour(SnsBehaviour::Deny);
        let (code, items) = sns_items(&gw);
        assert_eq!(code, 1, "{items:?}");
        assert_eq!(items["sns_credentials"].0, "ok", "{items:?}");
        let (status, detail) = &items["sns_topic"];
        assert_eq!(status, "fail");
        assert!(
            detail.starts_with(&format!(
                "access denied: the gateway's role needs sns:GetTopicAttributes on {ARN}"
            )),
            "{detail}"
        );
        gw.db.stop().unwrap();
        let denied = gw.sync_expecting(3);
        assert!(
            gw.log().contains(&format!(
                "failed: access denied: the gateway's role needs sns:Publish on {ARN}"
            )),
            "{}",
            gw.log()
        );

        gw.env.retain(|(name, _)| {
            !name.starts_with("AWS_ACCESS_KEY") && !name.starts_with("AWS_SECRET")
        });
        let requests = sns.seen().len();
        let (code, items) = sns_items(&gw);
        assert_eq!(code, 1, "{items:?}");
        let (status, detail) = &items["sns_credentials"];
        assert_eq!(status, "fail");
        assert!(detail.starts_with("no AWS credentials"), "{detail}");
        // One sentence: what each source of the chain said is for `-v`, not this line.
        assert!(
            detail.len() < 200 && !detail.contains("Attempted"),
            "{detail}"
        );
        let before = gw.log().len();
        let check = gw.run(&["-v", "check"]);
        let verbose = format!("{}{}", &gw.log()[before..], check.stderr);
        assert!(
            verbose.contains("DEBUG: what each source of AWS's credential chain said: "),
            "{verbose}"
        );
        assert!(!items.contains_key("sns_topic"), "{items:?}");
        assert_eq!(
            sns.seen().len(),
            requests,
            "nothing sent without credentials"
        );
        all_signed(&sns);
        no_credentials_shown(&gw, &format!("{denied:?}"));
    }
}

/// A build without the feature refuses ALERT_SNS_TOPIC_ARN at once (exit 2), naming the
/// feature and the other alert channels, before it touches anything.
#[cfg(not(feature = "aws"))]
#[test]
fn without_the_aws_feature_the_topic_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay-sync.conf");
    std::fs::write(
        &config,
        "DB_HOST=127.0.0.1\nDELL_RELAY_IP=127.0.0.1\n\
         ALERT_SNS_TOPIC_ARN=arn:aws:sns:eu-central-1:123456789012:relay-sync-alerts\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    for args in [&[][..], &["check"]] {
        let output = std::process::Command::new(crate::gateway::BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let expected = format!(
            "ALERT_SNS_TOPIC_ARN is set ({} line 3) but this relay-sync was built without AWS \
             support (cargo feature `aws`)",
            config.display()
        );
        assert!(
            stderr.contains(&expected) || stdout.contains(&expected),
            "{args:?}: {stdout}{stderr}"
        );
        let code = if args.is_empty() { 2 } else { 1 };
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {stdout}{stderr}"
        );
    }
}
