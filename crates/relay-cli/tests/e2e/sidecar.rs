//! The sidecar form (issue 20), as ECS Fargate runs a task with `pidMode: task`: `relay-sync
//! watch` in a container of its own, built from the shipped `packaging/container/Containerfile`
//! (over a base made from Debian's packages, `podman build --from`), beside the Postfix
//! container in a podman pod that shares the PID namespace (and, here, the host's network),
//! both with the volumes the shipped `compose.yaml` gives them. The relay-sync container is run
//! with what `compose.yaml` says (command, user, environment, volumes, secret, health check):
//! the file is tested, not only shipped. Over SMTP: propagation, a database outage, SIGTERM.
//!
//! `shipped_container_files_agree` checks that the ECS task definition, the Containerfile and
//! the compose file name the same paths, user, command and health check.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relay_testbed::{podman_run, Image, MariaDb, Pod, PostfixContainer, SmtpSink};
use yaml_rust2::{Yaml, YamlLoader};

use crate::gateway::BIN;
use crate::smtp::{rcpt, rcpt_settled, wait_until};

fn container_dir() -> PathBuf {
    relay_testbed::packaging_dir().join("container")
}

/// The shipped compose file.
fn compose() -> Yaml {
    let path = container_dir().join("compose.yaml");
    let text = fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .remove(0)
}

/// The shipped ECS task definition.
fn task_definition() -> serde_json::Value {
    let path = container_dir().join("ecs-task-definition.json");
    serde_json::from_str(&fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .unwrap_or_else(|| panic!("not a list: {yaml:?}"))
        .iter()
        .map(|item| item.as_str().unwrap().to_owned())
        .collect()
}

/// A service's `volumes` as (source, container path, options).
fn volumes(service: &Yaml) -> Vec<(String, String, String)> {
    strings(&service["volumes"])
        .into_iter()
        .map(|spec| {
            let mut parts = spec.splitn(3, ':');
            let source = parts.next().unwrap().to_owned();
            let path = parts.next().unwrap_or_else(|| panic!("{spec}")).to_owned();
            (source, path, parts.next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// A service's `environment` (a mapping).
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    service["environment"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Yaml::String(s) => s.clone(),
                other => panic!("{k:?}: quote {other:?} in compose.yaml"),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// The ECS container definition named `name`.
fn ecs_container<'a>(task: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    task["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in the task definition"))
}

fn ecs_mounts(container: &serde_json::Value) -> BTreeMap<String, String> {
    container["mountPoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["containerPath"].as_str().unwrap().to_owned(),
                m["sourceVolume"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The Containerfile's instruction `name` (e.g. `USER`), its arguments as written.
fn containerfile_instruction(name: &str) -> String {
    let text = fs::read_to_string(container_dir().join("Containerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the Containerfile"))
        .trim()
        .to_owned()
}

/// A JSON array of strings as the Containerfile's exec form writes it.
fn exec_form(words: &[String]) -> String {
    serde_json::to_string(words).unwrap().replace(",", ", ")
}

/// The mount of the config file, which ECS does without (every key from the environment).
const CONFIG_FILE: &str = "/opt/mailserver/config/relay-sync.conf";

#[test]
fn shipped_container_files_agree() {
    let compose = compose();
    let task = task_definition();
    let services = &compose["services"];
    let (postfix, relay) = (&services["postfix"], &services["relay-sync"]);
    let (ecs_postfix, ecs_relay) = (
        ecs_container(&task, "postfix"),
        ecs_container(&task, "relay-sync"),
    );

    // The requirements' name for the host form.
    assert_eq!(
        postfix["container_name"].as_str(),
        Some("mailserver-postfix")
    );
    // One PID namespace: compose's pid: service:postfix is ECS's pidMode: task.
    assert_eq!(relay["pid"].as_str(), Some("service:postfix"));
    assert_eq!(task["pidMode"], "task");
    assert_eq!(
        task["requiresCompatibilities"],
        serde_json::json!(["FARGATE"])
    );

    // The same paths in both containers of both files, from the same volume.
    let compose_paths = |service: &Yaml| -> BTreeMap<String, String> {
        volumes(service)
            .into_iter()
            .filter(|(_, path, _)| path != CONFIG_FILE)
            .map(|(source, path, _)| (path, source))
            .collect()
    };
    for (compose_service, ecs) in [(postfix, ecs_postfix), (relay, ecs_relay)] {
        let (ours, theirs) = (compose_paths(compose_service), ecs_mounts(ecs));
        assert_eq!(
            ours.keys().collect::<BTreeSet<_>>(),
            theirs.keys().collect::<BTreeSet<_>>(),
            "{}",
            ecs["name"]
        );
    }
    for (path, source) in compose_paths(postfix) {
        assert_eq!(compose_paths(relay).get(&path), Some(&source), "{path}");
        assert_eq!(
            ecs_mounts(ecs_relay).get(&path),
            ecs_mounts(ecs_postfix).get(&path)
        );
    }
    assert!(volumes(relay)
        .iter()
        .any(|(_, path, opts)| path == CONFIG_FILE && opts == "ro"));

    // The same user, command and health check, and the Containerfile's.
    let user = relay["user"].as_str().unwrap();
    assert_eq!(ecs_relay["user"], user);
    assert_eq!(containerfile_instruction("USER"), user);
    let command = strings(&relay["command"]);
    assert_eq!(ecs_relay["command"], serde_json::json!(command));
    assert_eq!(containerfile_instruction("CMD"), exec_form(&command));
    let health = strings(&relay["healthcheck"]["test"]);
    assert_eq!(health[..2], ["CMD", "relay-sync"]);
    assert!(
        health.windows(2).any(|w| w == ["status", "--max-age"]),
        "{health:?}"
    );
    assert_eq!(
        ecs_relay["healthCheck"]["command"],
        serde_json::json!(health)
    );
    assert!(
        containerfile_instruction("HEALTHCHECK")
            .ends_with(&format!("CMD {}", exec_form(&health[1..]))),
        "{}",
        containerfile_instruction("HEALTHCHECK")
    );
    // status --max-age above RECONCILE_INTERVAL (300 s), the longest a quiet watcher waits.
    let max_age: u64 = health.last().unwrap().parse().unwrap();
    assert!(max_age > 300);
    // SIGTERM's grace: compose's 2m is ECS's stopTimeout.
    assert_eq!(relay["stop_grace_period"].as_str(), Some("2m"));
    assert_eq!(ecs_relay["stopTimeout"], 120);

    // The same settings of paths and logging; LOG_FILE=- sends the log to CloudWatch.
    let ecs_env: BTreeMap<String, String> = ecs_relay["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (key, value) in environment(relay) {
        if key == "RELAY_SYNC_DB_PASSWORD_FILE" {
            continue;
        }
        assert_eq!(ecs_env.get(&key), Some(&value), "{key}");
    }
    assert_eq!(ecs_env["RELAY_SYNC_LOG_FILE"], "-");
    assert_eq!(ecs_relay["logConfiguration"]["logDriver"], "awslogs");
    // The transport map is on the volume both containers share.
    let transport = &ecs_env["RELAY_SYNC_TRANSPORT_FILE"];
    assert!(ecs_mounts(ecs_postfix)
        .keys()
        .any(|p| Path::new(transport).parent() == Some(Path::new(p))));
    // The password comes from Secrets Manager, read by relay-sync itself with the task role
    // (so a rotation is followed; ECS's own `secrets` injection fixes it at task start), and
    // is never in the environment in clear.
    assert!(ecs_relay.get("secrets").is_none());
    assert!(ecs_env["RELAY_SYNC_DB_PASSWORD_SECRET"].starts_with("arn:aws:secretsmanager:"));
    assert!(!ecs_env
        .keys()
        .any(|k| k.contains("PASSWORD") && k != "RELAY_SYNC_DB_PASSWORD_SECRET"));
    // Every key ECS sets is one relay-sync knows, with a valid value: a typo would stop the
    // task. `status` reads the configuration and files only.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("relay-sync.conf");
    fs::write(&empty, "").unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o600)).unwrap();
    let run = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&empty)
        .arg("status")
        .env_remove("RUST_LOG")
        .envs(&ecs_env)
        .env("RELAY_SYNC_STATE_DIR", dir.path().join("state"))
        .env("RELAY_SYNC_BACKUP_DIR", dir.path().join("backup"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "relay-sync refuses the task definition's environment: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The relay-sync image, built from the shipped Containerfile with this test's binary.
fn relay_sync_image(base: &Image) -> Image {
    let context = tempfile::tempdir().unwrap();
    fs::copy(BIN, context.path().join("relay-sync")).unwrap();
    Image::build(
        base,
        &container_dir().join("Containerfile"),
        context.path(),
        "relay-testbed-relay-sync",
    )
    .unwrap()
}

/// The relay-sync sidecar's container, run as compose.yaml says; removed on drop.
struct Sidecar {
    name: String,
}

impl Sidecar {
    fn logs(&self) -> String {
        let out = relay_testbed::podman()
            .unwrap()
            .args(["logs", &self.name])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn wait_for(&self, needle: &str, count: usize, limit: Duration) {
        assert!(
            wait_until(limit, || self.logs().matches(needle).count() >= count),
            "no {count}× {needle:?} within {limit:?}:\n{}",
            self.logs()
        );
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = podman_run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn sidecar_in_a_pod_propagates_rides_out_an_outage_and_stops_on_sigterm() {
    let compose = compose();
    let services = &compose["services"];
    let (postfix_service, relay) = (&services["postfix"], &services["relay-sync"]);
    assert_eq!(relay["pid"].as_str(), Some("service:postfix"));
    let base = Image::postfix().unwrap();
    let image = relay_sync_image(&base);
    let mut db = MariaDb::start().unwrap();
    db.load_fixtures().unwrap();
    let sink = SmtpSink::start().unwrap();
    let pod = Pod::create("relay-testbed-sidecar").unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

    // compose.yaml's sources, here: its named volumes are the pod's, its host directories
    // and files this test's own.
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for name in compose["volumes"].as_hash().unwrap().keys() {
        let name = name.as_str().unwrap();
        sources.insert(name.to_owned(), pod.volume(name).unwrap());
    }
    let config = dir.path().join("relay-sync.conf");
    fs::write(
        &config,
        format!(
            "# relay-sync in its sidecar container (e2e)\n\
             DB_HOST=127.0.0.1\n\
             DB_PORT={}\n\
             DB_USER=relay_sync\n\
             DB_CONNECT_TIMEOUT=2\n\
             DELL_RELAY_IP=127.0.0.1\n\
             DELL_RELAY_PORT={}\n\
             PRESERVE_DOMAINS=kuma8088.com\n\
             POLL_INTERVAL=1\n",
            db.port(),
            sink.port()
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    sources.insert("./relay-sync.conf".into(), config.display().to_string());
    let password = dir.path().join("db_password");
    fs::write(&password, "relay-sync-test-pw\n").unwrap();
    fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();
    let mount = |service: &Yaml| -> Vec<String> {
        volumes(service)
            .into_iter()
            .map(|(source, path, options)| {
                let here = sources.get(&source).cloned().unwrap_or_else(|| {
                    // A directory of the host (the maps): this test's own.
                    assert!(source.starts_with('/'), "{source}");
                    let here = dir
                        .path()
                        .join(source.trim_start_matches('/').replace('/', "_"));
                    fs::create_dir_all(&here).unwrap();
                    fs::set_permissions(&here, fs::Permissions::from_mode(0o755)).unwrap();
                    here.display().to_string()
                });
                if options.is_empty() {
                    format!("{here}:{path}")
                } else {
                    format!("{here}:{path}:{options}")
                }
            })
            .collect()
    };
    let env = environment(relay);
    let transport = PathBuf::from(&env["RELAY_SYNC_TRANSPORT_FILE"]);
    let postfix = PostfixContainer::start_in_pod(
        &base,
        &pod,
        &mount(postfix_service),
        &transport,
        "kuma8088.com",
    )
    .unwrap();

    // relay-sync as compose.yaml runs it.
    let name = format!("{}-relay-sync", pod.name());
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--pod".into(),
        pod.name().into(),
        "--name".into(),
        name.clone(),
        "--user".into(),
        relay["user"].as_str().unwrap().into(),
        "--stop-timeout".into(),
        "120".into(),
    ];
    for spec in mount(relay) {
        args.extend(["--volume".into(), spec]);
    }
    for secret in strings(&relay["secrets"]) {
        assert_eq!(secret, "db_password");
        args.extend([
            "--volume".into(),
            format!("{}:/run/secrets/{secret}:ro", password.display()),
        ]);
    }
    for (key, value) in &env {
        args.extend(["--env".into(), format!("{key}={value}")]);
    }
    args.push(image.reference().into());
    args.extend(strings(&relay["command"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_run(&args).unwrap();
    let sidecar = Sidecar { name };

    // The first sync, through Postfix's files on the shared volumes and a reload of the
    // master in the other container.
    sidecar.wait_for("===== Sync completed", 1, Duration::from_secs(60));
    let smtp = postfix.smtp_port();
    for to in ["user@example.com", "user@example.org", "user@kuma8088.com"] {
        let reply = rcpt_settled(smtp, to, "250");
        assert!(
            reply.starts_with("250"),
            "{to}: {reply}\n{}",
            sidecar.logs()
        );
    }
    assert!(rcpt(smtp, "user@old.example").starts_with("554"));
    assert!(
        postfix.logs().contains("reload -- version"),
        "{}",
        postfix.logs()
    );
    let first = sidecar.logs();
    assert!(
        first.lines().all(|l| l.starts_with('[')),
        "LOG_FILE=- lines:\n{first}"
    );
    // The health check compose.yaml (and the image) run.
    let health = strings(&relay["healthcheck"]["test"]);
    let mut check = vec!["exec", sidecar.name.as_str()];
    check.extend(health[1..].iter().map(String::as_str));
    podman_run(&check).unwrap_or_else(|e| panic!("health check: {e:#}\n{}", sidecar.logs()));

    // Propagation over SMTP: from the admin's commit to RCPT 250 at the Postfix container.
    let mut samples = Vec::new();
    for i in 0..9 {
        let domain = format!("sidecar{i}.example");
        std::thread::sleep(Duration::from_millis(400 + 111 * i));
        let start = Instant::now();
        db.sql(&format!(
            "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('{domain}', 1)"
        ))
        .unwrap();
        let to = format!("user@{domain}");
        assert!(
            wait_until(Duration::from_secs(20), || rcpt(smtp, &to)
                .starts_with("250")),
            "{domain} never accepted:\n{}",
            sidecar.logs()
        );
        samples.push(start.elapsed());
    }
    let p50 = median(samples.clone());
    eprintln!("sidecar propagation (POLL_INTERVAL 1 s, map mode): p50 {p50:?}, all {samples:?}");
    assert!(
        p50 <= Duration::from_millis(1500),
        "p50 {p50:?}: {samples:?}"
    );

    // The database goes away: mail for the domains Postfix has keeps flowing; back, it syncs.
    db.stop().unwrap();
    sidecar.wait_for("Database unreachable:", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert!(rcpt(smtp, "user@example.com").starts_with("250"));
    assert!(rcpt(smtp, "user@sidecar0.example").starts_with("250"));
    db.start_again().unwrap();
    sidecar.wait_for("Database reachable again after", 1, Duration::from_secs(60));
    db.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'")
        .unwrap();
    let reply = rcpt_settled(smtp, "user@old.example", "250");
    assert!(reply.starts_with("250"), "{reply}\n{}", sidecar.logs());
    assert_eq!(sidecar.logs().matches("Database unreachable:").count(), 1);

    // SIGTERM (podman stop): the watcher finishes and exits 0, well within the grace.
    let stopping = Instant::now();
    podman_run(&["stop", "--time", "120", &sidecar.name]).unwrap();
    let took = stopping.elapsed();
    let code = podman_run(&["inspect", "--format", "{{.State.ExitCode}}", &sidecar.name]).unwrap();
    assert_eq!(code.trim(), "0", "{}", sidecar.logs());
    assert!(took < Duration::from_secs(30), "{took:?}");
    sidecar.wait_for("Watcher stopped after", 1, Duration::from_secs(5));
    // Postfix goes on without it.
    assert!(rcpt(smtp, "user@old.example").starts_with("250"));
}
