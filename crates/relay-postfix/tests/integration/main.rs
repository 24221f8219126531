//! relay-postfix against a real, private Postfix instance (relay-testbed).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.
#![allow(clippy::disallowed_methods)] // Tests set files up by path in their own temporary directories.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use relay_postfix::{
    list_backups, read_backup, PostfixCli, PostfixError, PostfixRead, PostfixSettings, PostfixWrite,
};
use relay_testbed::{Postfix, SmtpSink};

mod takeover;

const HOP: &str = "smtp:[127.0.0.1]:2525";

/// `nobody` and `nogroup`: the unprivileged local user of the takeover tests.
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

fn settings(postfix: &Postfix, backups: &Path, map_type: Option<&str>) -> PostfixSettings {
    PostfixSettings {
        config_dir: postfix.config_dir(),
        command_dir: PathBuf::from("/usr/sbin"),
        command_prefix: Vec::new(),
        transport_file: postfix.transport_file(),
        map_type: map_type.map(str::to_owned),
        backup_dir: backups.to_owned(),
        backup_keep: 5,
        command_timeout: Duration::from_secs(120),
        recipient_validation: false,
    }
}

fn cli(postfix: &Postfix, map_type: Option<&str>) -> (PostfixCli, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cli = PostfixCli::new(settings(postfix, &dir.path().join("backup"), map_type)).unwrap();
    (cli, dir)
}

fn block(domains: &[&str]) -> String {
    domains.iter().map(|d| format!("{d} {HOP}\n")).collect()
}

/// Names in the transport file's directory that look like relay-sync's temporary files.
fn temp_files(postfix: &Postfix) -> Vec<String> {
    fs::read_dir(postfix.config_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("relay-sync.tmp"))
        .collect()
}

#[test]
fn relay_domains_round_trip_leaves_the_rest_of_main_cf() {
    let postfix = Postfix::start("kuma8088.com").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    assert_eq!(cli.relay_domains().unwrap(), "kuma8088.com");
    let main_cf = postfix.config_dir().join("main.cf");
    let before = fs::read_to_string(&main_cf).unwrap();
    cli.set_relay_domains("a.example, kuma8088.com").unwrap();
    assert_eq!(cli.relay_domains().unwrap(), "a.example, kuma8088.com");
    let after = fs::read_to_string(&main_cf).unwrap();
    let changed: Vec<_> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![(
            "relay_domains = kuma8088.com",
            "relay_domains = a.example, kuma8088.com"
        )]
    );
    assert_eq!(before.lines().count(), after.lines().count());
    // Defence in depth: a value with a line break never reaches postconf.
    assert!(matches!(
        cli.set_relay_domains("a.example\nmynetworks = 0.0.0.0/0"),
        Err(PostfixError::Invalid { .. })
    ));
    assert_eq!(cli.relay_domains().unwrap(), "a.example, kuma8088.com");
}

#[test]
fn written_transport_answers_lookups_and_the_map_is_fresh() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    assert_eq!(cli.map_type(), "hash");
    assert_eq!(cli.lookup_transport("a.example").unwrap(), None);
    cli.write_transport(&block(&["a.example", "b.example"]))
        .unwrap();
    assert_eq!(
        cli.lookup_transport("a.example").unwrap().as_deref(),
        Some(HOP)
    );
    assert_eq!(
        cli.lookup_transport("B.Example").unwrap().as_deref(),
        Some(HOP)
    );
    assert_eq!(cli.lookup_transport("c.example").unwrap(), None);
    assert!(cli.transport_map_is_fresh().unwrap());
    assert_eq!(
        cli.read_transport().unwrap().unwrap(),
        block(&["a.example", "b.example"])
    );
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
}

/// A transport file that is a symbolic link (configuration management keeps some) stays one:
/// the file it points to gets the new text, the database is built beside the link where Postfix
/// looks, and the map is fresh afterwards, so the next run does not rebuild it.
#[test]
fn a_symlinked_source_stays_a_link_and_its_target_is_written() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, dir) = cli(&postfix, None);
    let elsewhere = dir.path().join("managed");
    fs::create_dir(&elsewhere).unwrap();
    let target = elsewhere.join("transport");
    fs::write(&target, block(&["a.example"])).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    let link = postfix.transport_file();
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();

    cli.write_transport(&block(&["a.example", "b.example"]))
        .unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), target);
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        block(&["a.example", "b.example"])
    );
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        cli.lookup_transport("b.example").unwrap().as_deref(),
        Some(HOP)
    );
    assert!(cli.transport_map_is_fresh().unwrap());
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
    let beside_target: Vec<_> = fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside_target, ["transport"]);

    // A link to nothing is refused, naming the link; nothing is created where it points.
    fs::remove_file(&target).unwrap();
    let error = cli.write_transport(&block(&["a.example"])).unwrap_err();
    assert!(
        error.to_string().contains(&link.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert!(!target.exists());
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_source_newer_than_its_map_is_stale_until_rebuilt() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    cli.write_transport(&block(&["a.example"])).unwrap();
    // An operator edits the source by hand and forgets postmap.
    fs::write(
        postfix.transport_file(),
        block(&["a.example", "hand.example"]),
    )
    .unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(postfix.transport_file())
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(!cli.transport_map_is_fresh().unwrap());
    assert_eq!(cli.lookup_transport("hand.example").unwrap(), None);
    cli.rebuild_transport_map().unwrap();
    assert!(cli.transport_map_is_fresh().unwrap());
    assert_eq!(
        cli.lookup_transport("hand.example").unwrap().as_deref(),
        Some(HOP)
    );
}

#[test]
fn owner_and_mode_of_source_and_map_are_kept() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    let source = postfix.transport_file();
    let db = cli.transport_database();
    let postfix_uid = fs::metadata(postfix.config_dir().join("../data"))
        .unwrap()
        .uid();
    for path in [&source, &db] {
        std::os::unix::fs::chown(path, Some(postfix_uid), None).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o640)).unwrap();
    }
    cli.write_transport(&block(&["a.example"])).unwrap();
    for path in [&source, &db] {
        let meta = fs::metadata(path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o640,
            "{}",
            path.display()
        );
        assert_eq!(meta.uid(), postfix_uid, "{}", path.display());
    }
}

/// A command directory where `name` is a shell script running `body`, and the others are
/// links to the real commands.
fn stand_in_commands(name: &str, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for program in ["postconf", "postmap", "postfix"] {
        let path = dir.path().join(program);
        if program == name {
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::os::unix::fs::symlink(format!("/usr/sbin/{program}"), &path).unwrap();
        }
    }
    dir
}

/// A command directory where `failing` is a stand-in that fails, and the others are real.
fn failing_commands(failing: &str) -> tempfile::TempDir {
    stand_in_commands(
        failing,
        &format!("echo \"{failing}: fatal: stand-in failure\" >&2\nexit 1"),
    )
}

#[test]
fn a_failing_postmap_leaves_source_and_map_untouched() {
    let postfix = Postfix::start("a.example").unwrap();
    let (good, dir) = cli(&postfix, None);
    good.write_transport(&block(&["a.example"])).unwrap();
    let source_before = fs::read(postfix.transport_file()).unwrap();
    let db_before = fs::read(good.transport_database()).unwrap();

    let commands = failing_commands("postmap");
    let mut s = settings(&postfix, &dir.path().join("backup"), Some("hash"));
    s.command_dir = commands.path().to_owned();
    let bad = PostfixCli::new(s).unwrap();
    match bad.write_transport(&block(&["a.example", "b.example"])) {
        Err(PostfixError::CommandFailed {
            command, stderr, ..
        }) => {
            assert!(command.contains("postmap"), "{command}");
            // Built in a private directory of an unpredictable name beside the transport file.
            assert!(command.contains(".relay-sync.tmp/transport"), "{command}");
            assert!(command.contains("/.transport."), "{command}");
            assert_eq!(stderr, "postmap: fatal: stand-in failure");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
    assert_eq!(fs::read(postfix.transport_file()).unwrap(), source_before);
    assert_eq!(fs::read(good.transport_database()).unwrap(), db_before);
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
    assert_eq!(good.lookup_transport("b.example").unwrap(), None);
}

#[test]
fn a_hanging_postmap_times_out_and_leaves_source_and_map_untouched() {
    let postfix = Postfix::start("a.example").unwrap();
    let (good, dir) = cli(&postfix, None);
    good.write_transport(&block(&["a.example"])).unwrap();
    let source_before = fs::read(postfix.transport_file()).unwrap();
    let db_before = fs::read(good.transport_database()).unwrap();

    let commands = stand_in_commands("postmap", "sleep 300");
    let mut s = settings(&postfix, &dir.path().join("backup"), Some("hash"));
    s.command_dir = commands.path().to_owned();
    s.command_timeout = Duration::from_secs(1);
    let bad = PostfixCli::new(s).unwrap();
    let started = Instant::now();
    let error = bad
        .write_transport(&block(&["a.example", "b.example"]))
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    match &error {
        PostfixError::Timeout { command, after } => {
            assert!(command.contains("postmap"), "{command}");
            assert_eq!(*after, Duration::from_secs(1));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.ends_with("still running after 1s; its process group was killed"),
        "{message}"
    );
    assert_eq!(fs::read(postfix.transport_file()).unwrap(), source_before);
    assert_eq!(fs::read(good.transport_database()).unwrap(), db_before);
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
}

#[test]
fn a_hanging_reload_times_out_and_what_it_started_is_killed() {
    let postfix = Postfix::start("a.example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    // Like a wedged reload: it started something that also never ends.
    let commands = stand_in_commands(
        "postfix",
        &format!(
            "case \"$*\" in *reload*) sleep 300 & echo $! > '{}'; sleep 300;; esac\nexec /usr/sbin/postfix \"$@\"",
            pidfile.display()
        ),
    );
    let mut s = settings(&postfix, &dir.path().join("backup"), None);
    s.command_dir = commands.path().to_owned();
    s.command_timeout = Duration::from_secs(1);
    let cli = PostfixCli::new(s).unwrap();
    let started = Instant::now();
    match cli.reload() {
        Err(PostfixError::Timeout { command, .. }) => {
            assert!(command.ends_with("reload"), "{command}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let pid = fs::read_to_string(&pidfile).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    assert!(
        eventually(Duration::from_secs(5), || fs::read_to_string(&stat)
            .map_or(true, |s| s.contains(") Z"))),
        "the reload's child {} survived",
        pid.trim()
    );
}

#[test]
fn the_container_probe_runs_through_the_prefix() {
    let postfix = Postfix::start("a.example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&postfix, &dir.path().join("backup"), None);
    // `env` as a prefix runs the probe on this host: same files, and a prefix to go through.
    s.command_prefix = vec!["env".into()];
    s.command_dir = PathBuf::from("/usr/sbin");
    let cli = PostfixCli::new(s).unwrap();
    cli.container_sees(&postfix.config_dir().join("main.cf"))
        .unwrap();
    match cli.container_sees(&dir.path().join("absent")) {
        Err(PostfixError::CommandFailed {
            command, status, ..
        }) => {
            // Bounded inside the "container" too: its own `timeout` runs the probe.
            assert!(
                command.starts_with("env timeout -k 1 120 test -e /"),
                "{command}"
            );
            assert!(command.ends_with("/absent"), "{command}");
            assert_eq!(status, "exit status: 1");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

/// A prefix that passes no standard input, as `docker exec NAME` and `podman exec NAME` without
/// `-i` do: the verification's batched lookups still find every key (they travel as an
/// argument), including more keys than fit in one argument.
#[test]
fn lookups_work_through_a_prefix_that_passes_no_standard_input() {
    let postfix = Postfix::start("a.example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&postfix, &dir.path().join("backup"), None);
    // What `docker exec` without `-i` does to standard input, on this host.
    s.command_prefix = ["/bin/sh", "-c", "exec \"$@\" < /dev/null", "no-stdin"]
        .map(str::to_owned)
        .to_vec();
    let cli = PostfixCli::new(s).unwrap();
    let many: Vec<String> = (0..3000).map(|i| format!("host{i:05}.example")).collect();
    let mut text = block(&["a.example", "b.example"]);
    for name in &many {
        text.push_str(&format!("{name} {HOP}\n"));
    }
    cli.write_transport(&text).unwrap();
    assert_eq!(
        cli.lookup_transports(&["b.example", "nowhere.example", "a.example"])
            .unwrap(),
        [Some(HOP.to_owned()), None, Some(HOP.to_owned())]
    );
    // About 57 KB of keys: more than one argument's worth, so more than one postmap.
    let keys: Vec<&str> = many.iter().map(String::as_str).collect();
    let found = cli.lookup_transports(&keys).unwrap();
    assert!(found.iter().all(|v| v.as_deref() == Some(HOP)), "{found:?}");
    // A failure names the command with the keys counted, not listed.
    let mut broken = settings(&postfix, &dir.path().join("backup"), None);
    broken.command_prefix = vec!["env".into()];
    broken.transport_file = dir.path().join("missing");
    broken.map_type = Some("hash".into());
    let broken = PostfixCli::new(broken).unwrap();
    match broken.lookup_transports(&["a.example", "b.example"]) {
        Err(PostfixError::CommandFailed { command, .. }) => {
            assert!(command.contains("<2 line(s)>"), "{command}");
            assert!(!command.contains("a.example"), "{command}");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

/// The watcher's mark of a Postfix, read here and through a prefix (`env`, which runs the
/// container's script on this host): the same while nothing happens, another after an edit of
/// main.cf and after a restart, none while Postfix is stopped.
#[test]
fn the_mark_changes_with_main_cf_and_a_restart_and_is_none_while_stopped() {
    use relay_postfix::MarkReader;
    let mut postfix = Postfix::start("a.example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let here = settings(&postfix, &dir.path().join("backup"), None);
    let mut through = here.clone();
    through.command_prefix = vec!["env".into()];
    for s in [here, through] {
        let through_prefix = !s.command_prefix.is_empty();
        let reader = MarkReader::new(s);
        let first = reader.read().unwrap();
        assert_eq!(reader.read().unwrap(), first, "prefix: {through_prefix}");
        let value = format!("relay_domains = b{}.example", u8::from(through_prefix));
        postfix
            .command("/usr/sbin/postconf", &["-e", &value])
            .unwrap();
        let edited = reader.read().unwrap();
        assert_ne!(edited.main_cf, first.main_cf);
        assert_eq!(edited.master, first.master);
        postfix.stop().unwrap();
        assert!(reader.read().is_err(), "prefix: {through_prefix}");
        postfix.start_again().unwrap();
        let restarted = reader.read().unwrap();
        assert_eq!(restarted.main_cf, edited.main_cf);
        assert_ne!(restarted.master, edited.master, "prefix: {through_prefix}");
    }
}

#[test]
fn reload_of_a_stopped_instance_fails_with_postfix_words() {
    let mut postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    cli.reload().unwrap();
    postfix.stop().unwrap();
    match cli.reload() {
        Err(PostfixError::CommandFailed {
            command, stderr, ..
        }) => {
            assert!(command.ends_with("reload"), "{command}");
            assert!(stderr.contains("not running"), "{stderr}");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

#[test]
fn missing_commands_are_named_with_the_fix() {
    let postfix = Postfix::start("a.example").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let mut s = settings(&postfix, empty.path(), None);
    s.command_dir = empty.path().to_owned();
    let error = PostfixCli::new(s).unwrap_err();
    assert!(
        matches!(error, PostfixError::CommandMissing { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&format!("{}/postconf not found", empty.path().display())),
        "{text}"
    );
    assert!(text.contains("POSTFIX_COMMAND_DIR"), "{text}");
}

#[test]
fn unsupported_map_type_is_refused() {
    let postfix = Postfix::start("a.example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let error = PostfixCli::new(settings(&postfix, dir.path(), Some("mysql"))).unwrap_err();
    assert!(
        error.to_string().contains("set MAP_TYPE to hash"),
        "{error}"
    );
}

#[test]
fn lmdb_and_cdb_maps_are_built_and_answer() {
    let postfix = Postfix::start("a.example").unwrap();
    for map_type in ["lmdb", "cdb", "btree"] {
        let (cli, _dir) = cli(&postfix, Some(map_type));
        cli.write_transport(&block(&["a.example", map_type_domain(map_type)]))
            .unwrap();
        assert_eq!(
            cli.lookup_transport(map_type_domain(map_type))
                .unwrap()
                .as_deref(),
            Some(HOP),
            "{map_type}"
        );
        assert!(cli.transport_map_is_fresh().unwrap(), "{map_type}");
        assert!(cli.transport_database().exists(), "{map_type}");
        assert!(
            temp_files(&postfix).is_empty(),
            "{map_type}: {:?}",
            temp_files(&postfix)
        );
    }
}

fn map_type_domain(map_type: &str) -> &'static str {
    match map_type {
        "lmdb" => "lmdb.example",
        "cdb" => "cdb.example",
        _ => "btree.example",
    }
}

#[test]
fn backups_are_private_and_hold_the_previous_state() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, dir) = cli(&postfix, None);
    let backup = cli
        .backup("a.example", Some("a.example smtp:[x]\n"))
        .unwrap();
    assert_eq!(backup.files.len(), 2);
    assert_eq!(fs::read_to_string(&backup.files[0]).unwrap(), "a.example\n");
    assert_eq!(
        fs::read_to_string(&backup.files[1]).unwrap(),
        "a.example smtp:[x]\n"
    );
    let mode = fs::metadata(dir.path().join("backup"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let listed = relay_postfix::list_backups(&dir.path().join("backup")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].stamp, backup.stamp);
}

/// What a run killed during postmap leaves (Berkeley DB's creation file, a half-written LMDB
/// file, cdb's own temporary, a stale temporary source: under the fixed names of versions
/// before build directories, or in a build directory) never stands in a later build's way,
/// since every build has a directory of its own, and `remove_leftovers` clears it.
#[test]
fn leftovers_of_a_crashed_postmap_never_block_a_build_and_are_cleared() {
    let postfix = Postfix::start("a.example").unwrap();
    let dir = postfix.config_dir();
    let leftovers: [(&str, &str); 3] = [
        ("hash", "__db..transport.relay-sync.tmp.db"),
        ("lmdb", ".transport.relay-sync.tmp.lmdb"),
        ("cdb", ".transport.relay-sync.tmp.cdb.tmp"),
    ];
    for (map_type, leftover) in leftovers {
        fs::write(dir.join(leftover), "half-written garbage").unwrap();
        fs::write(
            dir.join(".transport.relay-sync.tmp"),
            "stale.example smtp:[192.0.2.9]\n",
        )
        .unwrap();
        let killed_build = dir.join(".transport.Zz9Yy8Xx7Ww6.relay-sync.tmp");
        fs::create_dir(&killed_build).unwrap();
        fs::write(
            killed_build.join("transport"),
            "stale.example smtp:[192.0.2.9]\n",
        )
        .unwrap();
        fs::write(
            killed_build.join("__db.transport.db"),
            "half-written garbage",
        )
        .unwrap();
        let (cli, _backups) = cli(&postfix, Some(map_type));
        cli.write_transport(&block(&["a.example"]))
            .unwrap_or_else(|e| panic!("{map_type}: {e}"));
        assert_eq!(
            cli.lookup_transport("a.example").unwrap().as_deref(),
            Some(HOP),
            "{map_type}"
        );
        assert_eq!(cli.lookup_transport("stale.example").unwrap(), None);
        cli.remove_leftovers().unwrap();
        assert!(
            temp_files(&postfix).is_empty(),
            "{map_type}: {:?}",
            temp_files(&postfix)
        );
    }
}

#[test]
fn a_new_transport_file_and_map_get_mode_0644() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    assert_eq!(
        cli.transport_map_name(),
        format!("hash:{}", postfix.transport_file().display())
    );
    fs::remove_file(postfix.transport_file()).unwrap();
    fs::remove_file(cli.transport_database()).unwrap();
    assert_eq!(cli.read_transport().unwrap(), None);
    assert!(
        cli.transport_map_is_fresh().unwrap(),
        "no source: nothing to build"
    );
    cli.rebuild_transport_map().unwrap();
    assert!(!cli.transport_database().exists(), "nothing to build from");
    cli.write_transport(&block(&["a.example"])).unwrap();
    for path in [postfix.transport_file(), cli.transport_database()] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o644,
            "{}",
            path.display()
        );
        assert_eq!(meta.uid(), 0, "{}", path.display());
    }
    let source = fs::metadata(postfix.transport_file())
        .unwrap()
        .modified()
        .unwrap();
    let db = fs::metadata(cli.transport_database())
        .unwrap()
        .modified()
        .unwrap();
    assert!(db >= source, "database {db:?} older than source {source:?}");
}

#[test]
fn the_map_type_follows_default_database_type() {
    let postfix = Postfix::start("a.example").unwrap();
    postfix
        .command(
            "/usr/sbin/postconf",
            &["-e", "default_database_type = lmdb"],
        )
        .unwrap();
    let (cli, _dir) = cli(&postfix, None);
    assert_eq!(cli.map_type(), "lmdb");
    assert_eq!(
        cli.transport_database(),
        PathBuf::from(format!("{}.lmdb", postfix.transport_file().display()))
    );
    cli.write_transport(&block(&["a.example"])).unwrap();
    assert!(cli.transport_database().exists());
    assert_eq!(
        cli.lookup_transport("a.example").unwrap().as_deref(),
        Some(HOP)
    );
}

#[test]
fn warnings_do_not_turn_a_miss_into_an_error_but_a_missing_map_is_one() {
    let mut postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    cli.write_transport(&block(&["a.example"])).unwrap();
    // Lookups need no running Postfix. Stopped, its postlogd is not flooded with the warnings
    // below: on a busy machine (a unix datagram queue of 10 here) postlogd once deadlocked
    // logging its own warnings, and postmap waited on it past COMMAND_TIMEOUT.
    postfix.stop().unwrap();
    // A parameter set twice makes every Postfix command warn on stderr.
    let main_cf = postfix.config_dir().join("main.cf");
    let mut text = fs::read_to_string(&main_cf).unwrap();
    text.push_str("mydomain = one.test\nmydomain = relay-sync.test\n");
    fs::write(&main_cf, text).unwrap();
    assert_eq!(
        cli.lookup_transport("a.example").unwrap().as_deref(),
        Some(HOP)
    );
    assert_eq!(cli.lookup_transport("b.example").unwrap(), None);
    fs::remove_file(cli.transport_database()).unwrap();
    match cli.lookup_transport("a.example") {
        Err(PostfixError::CommandFailed {
            command, stderr, ..
        }) => {
            assert!(command.contains(" -q a.example hash:"), "{command}");
            assert!(stderr.contains("fatal: open database"), "{stderr}");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

/// A backup directory holding generations stamped `20200101-000000` and `-2` … `-10`, and
/// files that only look like backups.
fn seeded_backup_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backup");
    fs::create_dir(&backups).unwrap();
    fs::set_permissions(&backups, fs::Permissions::from_mode(0o755)).unwrap();
    for n in 1..=10 {
        let stamp = match n {
            1 => "20200101-000000".to_owned(),
            n => format!("20200101-000000-{n}"),
        };
        fs::write(
            backups.join(format!("relay_domains.{stamp}.bak")),
            format!("v{n}\n"),
        )
        .unwrap();
        fs::write(
            backups.join(format!("transport.{stamp}.bak")),
            format!("t{n}\n"),
        )
        .unwrap();
    }
    for foreign in FOREIGN {
        fs::write(backups.join(foreign), "not ours").unwrap();
    }
    (dir, backups)
}

const FOREIGN: [&str; 5] = [
    "transport.20200101-000000-1.bak",
    "transport.20200101-000000-02.bak",
    "relay_domains.bak",
    "transport.old",
    "notes.txt",
];

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn backup_rotation_keeps_the_newest_generations_by_counter_and_ignores_foreign_files() {
    let postfix = Postfix::start("a.example").unwrap();
    let (dir, backups) = seeded_backup_dir();
    let mut s = settings(&postfix, &backups, None);
    s.backup_keep = 5;
    let cli = PostfixCli::new(s).unwrap();
    // A backup write a crash interrupted.
    let interrupted = ".transport.20200101-000000-3.bak.relay-sync.tmp";
    fs::write(backups.join(interrupted), "partial").unwrap();
    let backup = cli.backup("a.example, b.example", None).unwrap();
    let stamp = &backup.stamp;
    // Until the run is over (its origin known), the new generation is kept beside BACKUP_KEEP
    // others; finishing the run trims to BACKUP_KEEP.
    let expected = |kept: &[&str]| {
        let mut expected: Vec<String> = FOREIGN.iter().map(|f| f.to_string()).collect();
        expected.push(relay_postfix::GENERATIONS_INDEX.to_owned());
        for kept in kept {
            expected.push(format!("relay_domains.{kept}.bak"));
            expected.push(format!("transport.{kept}.bak"));
        }
        expected.sort();
        expected
    };
    assert_eq!(
        names(&backups),
        expected(&[
            "20200101-000000-6",
            "20200101-000000-7",
            "20200101-000000-8",
            "20200101-000000-9",
            "20200101-000000-10",
            stamp,
        ])
    );
    relay_postfix::finish_backups(&backups, 0, relay_postfix::Origin::Sync, 5).unwrap();
    assert_eq!(
        names(&backups),
        expected(&[
            "20200101-000000-7",
            "20200101-000000-8",
            "20200101-000000-9",
            "20200101-000000-10",
            stamp,
        ])
    );
    assert_eq!(
        backup.files,
        vec![
            backups.join(format!("relay_domains.{stamp}.bak")),
            backups.join(format!("transport.{stamp}.bak")),
        ]
    );
    let now = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    assert!(
        stamp.len() == 15 && stamp.as_str() <= now.as_str(),
        "{stamp} vs {now}"
    );
    let dir_mode = fs::metadata(&backups).unwrap().permissions().mode();
    assert_eq!(
        dir_mode & 0o777,
        0o700,
        "an existing 0755 directory is tightened"
    );
    for file in &backup.files {
        let mode = fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    assert_eq!(
        fs::read(&backup.files[0]).unwrap(),
        b"a.example, b.example\n"
    );
    assert_eq!(
        fs::read(&backup.files[1]).unwrap(),
        b"",
        "no transport file: empty"
    );
    let listed: Vec<String> = list_backups(&backups)
        .unwrap()
        .into_iter()
        .map(|g| g.stamp)
        .collect();
    assert_eq!(listed.last(), Some(stamp));
    assert_eq!(
        listed.first().map(String::as_str),
        Some("20200101-000000-7")
    );
    drop(dir);
}

#[test]
fn backups_in_the_same_second_get_distinct_stamps_shared_by_both_kinds() {
    let postfix = Postfix::start("a.example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backup");
    let mut s = settings(&postfix, &backups, None);
    s.backup_keep = 10;
    let cli = PostfixCli::new(s).unwrap();
    // Take this second and the next, so that the backup below falls in a taken second
    // whichever of the two it runs in.
    fs::create_dir(&backups).unwrap();
    let now = chrono::Local::now();
    for t in [now, now + chrono::Duration::seconds(1)] {
        let stamp = t.format("%Y%m%d-%H%M%S");
        fs::write(backups.join(format!("relay_domains.{stamp}.bak")), "x\n").unwrap();
    }
    let first = cli.backup("v1", Some("t1\n")).unwrap();
    let second = cli.backup("v2", Some("t2\n")).unwrap();
    assert!(first.stamp.ends_with("-2"), "{}", first.stamp);
    assert_ne!(first.stamp, second.stamp);
    for backup in [&first, &second] {
        let generation = list_backups(&backups)
            .unwrap()
            .into_iter()
            .find(|g| g.stamp == backup.stamp)
            .unwrap();
        assert!(generation.relay_domains.is_some() && generation.transport.is_some());
    }
    // The seeded next-second file would otherwise be the newest generation.
    for t in [now, now + chrono::Duration::seconds(1)] {
        let stamp = t.format("%Y%m%d-%H%M%S");
        fs::remove_file(backups.join(format!("relay_domains.{stamp}.bak"))).unwrap();
    }
    let newest = read_backup(&backups, None).unwrap();
    assert_eq!(
        (
            newest.stamp.as_str(),
            newest.relay_domains.as_str(),
            newest.transport.as_str()
        ),
        (second.stamp.as_str(), "v2", "t2\n")
    );
    let by_stamp = read_backup(&backups, Some(&first.stamp)).unwrap();
    assert_eq!(
        (by_stamp.relay_domains.as_str(), by_stamp.transport.as_str()),
        ("v1", "t1\n")
    );
}

#[test]
fn read_backup_refuses_unknown_and_incomplete_generations() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backup");
    assert!(matches!(
        read_backup(&backups, None),
        Err(PostfixError::Invalid { .. })
    ));
    fs::create_dir(&backups).unwrap();
    fs::write(
        backups.join("relay_domains.20200101-000000.bak"),
        "a.example\n",
    )
    .unwrap();
    let error = read_backup(&backups, None).unwrap_err();
    assert!(
        error.to_string().contains("transport.20200101-000000.bak"),
        "{error}"
    );
    let error = read_backup(&backups, Some("20200101-000001")).unwrap_err();
    assert!(matches!(error, PostfixError::Invalid { .. }), "{error}");
    assert!(error.to_string().contains("20200101-000001"), "{error}");
    fs::write(backups.join("transport.20200101-000000.bak"), "").unwrap();
    fs::write(
        backups.join("relay_domains.20200101-000000.bak"),
        "a.example\nmynetworks = 0.0.0.0/0\n",
    )
    .unwrap();
    let error = read_backup(&backups, None).unwrap_err();
    assert!(error.to_string().contains("more than one line"), "{error}");
}

#[test]
fn two_instances_run_side_by_side() {
    let mut first = Postfix::start("a.example").unwrap();
    let second = Postfix::start("b.example").unwrap();
    assert_ne!(first.smtp_port(), second.smtp_port());
    assert_ne!(first.config_dir(), second.config_dir());
    assert!(first.is_running() && second.is_running());
    assert_eq!(second.postconf("relay_domains").unwrap(), "b.example");
    first.stop().unwrap();
    assert!(!first.is_running());
    assert!(
        second.is_running(),
        "stopping one instance stopped the other"
    );
    let mut smtp = Smtp::connect(second.smtp_port());
    assert!(smtp.send("EHLO client.test").starts_with("250"));
    first.start_again().unwrap();
    assert!(first.is_running());
    assert!(first.maillog().contains("starting the Postfix mail system"));
}

/// A minimal SMTP client for loopback tests.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut smtp = Smtp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let banner = smtp.reply();
        assert!(banner.starts_with("220"), "{banner}");
        smtp
    }

    /// Reads one reply; a multi-line reply is returned as its last line.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_owned();
            }
        }
    }

    fn send(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

/// Polls `check` for up to `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn relayed_mail_reaches_the_sink_and_other_domains_are_refused() {
    let sink = SmtpSink::start().unwrap();
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    let hop = format!("smtp:[127.0.0.1]:{}", sink.port());
    cli.write_transport(&format!("a.example {hop}\nb.example {hop}\n"))
        .unwrap();
    cli.reload().unwrap();

    let mut smtp = Smtp::connect(postfix.smtp_port());
    assert!(smtp.send("EHLO client.test").starts_with("250"));
    assert!(smtp
        .send("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    let refused = smtp.send("RCPT TO:<user@b.example>");
    assert!(
        refused.starts_with("554 5.7.1") && refused.contains("Relay access denied"),
        "loopback must not be a trusted network: {refused}"
    );
    assert!(smtp.send("RCPT TO:<user@a.example>").starts_with("250"));
    assert!(smtp.send("DATA").starts_with("354"));
    let queued = smtp.send("Subject: relay-sync probe\r\n\r\nhello\r\n.");
    assert!(queued.starts_with("250"), "{queued}");
    assert!(smtp.send("QUIT").starts_with("221"));
    assert!(
        eventually(Duration::from_secs(30), || sink
            .messages()
            .iter()
            .any(|m| m.contains("Subject: relay-sync probe"))),
        "the sink got nothing; maillog:\n{}",
        postfix.maillog()
    );

    // Once relay_domains names it, b.example is accepted too.
    cli.set_relay_domains("a.example, b.example").unwrap();
    cli.reload().unwrap();
    assert_eq!(
        postfix.postconf("relay_domains").unwrap(),
        "a.example, b.example"
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut smtp = Smtp::connect(postfix.smtp_port());
            smtp.send("HELO client.test");
            smtp.send("MAIL FROM:<sender@client.test>");
            smtp.send("RCPT TO:<user@b.example>").starts_with("250")
        }),
        "b.example still refused after the reload; maillog:\n{}",
        postfix.maillog()
    );
}

#[test]
fn remove_leftovers_clears_only_relay_syncs_temporary_names() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, Some("lmdb"));
    let dir = postfix.config_dir();
    let ours = [
        ".transport.relay-sync.tmp",
        ".transport.relay-sync.tmp.lmdb",
        "__db..transport.relay-sync.tmp.lmdb",
        ".transport.relay-sync.tmp.lmdb.tmp",
    ];
    for name in ours {
        fs::write(dir.join(name), "left by a killed run").unwrap();
    }
    let killed_build = dir.join(".transport.Zz9Yy8Xx7Ww6.relay-sync.tmp");
    fs::create_dir(&killed_build).unwrap();
    fs::write(killed_build.join("transport.lmdb"), "half").unwrap();
    fs::write(dir.join("transport.bak"), "the operator's").unwrap();
    cli.remove_leftovers().unwrap();
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
    assert!(dir.join("transport.bak").exists());

    // Named like relay-sync's but not this user's own regular file or build directory: a
    // link (its target is no leftover) and another user's file are left alone.
    let victim = tempfile::NamedTempFile::new().unwrap();
    let link = dir.join(".transport.relay-sync.tmp");
    std::os::unix::fs::symlink(victim.path(), &link).unwrap();
    let theirs = dir.join(".transport.Aa1Bb2Cc3Dd4.relay-sync.tmp");
    fs::write(&theirs, "someone else's").unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOGROUP)).unwrap();
    cli.remove_leftovers().unwrap();
    assert!(fs::symlink_metadata(&link).is_ok());
    assert!(victim.path().exists());
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "someone else's");
    fs::remove_file(&link).unwrap();
    fs::remove_file(&theirs).unwrap();
    assert!(dir.join("transport").exists() && dir.join("transport.db").exists());
    cli.remove_leftovers().unwrap();
}

#[test]
fn an_unset_relay_domains_reads_as_what_postfix_defaults_to() {
    let postfix = Postfix::start("a.example").unwrap();
    let (first, _dir) = cli(&postfix, None);
    // The first read is the value `new`'s postconf saw.
    assert_eq!(first.relay_domains().unwrap(), "a.example");
    postfix
        .command("/usr/sbin/postconf", &["-X", "relay_domains"])
        .unwrap();
    // compatibility_level 3.6: the default expands to nothing.
    assert_eq!(first.relay_domains().unwrap(), "");
    // The same, read by `new`'s postconf.
    assert_eq!(cli(&postfix, None).0.relay_domains().unwrap(), "");
    postfix
        .command(
            "/usr/sbin/postconf",
            &[
                "-e",
                "compatibility_level = 1",
                "mydestination = mx.relay-sync.test",
            ],
        )
        .unwrap();
    // Below level 2 it means $mydestination, kept as a token relay-sync never touches.
    assert_eq!(first.relay_domains().unwrap(), "$mydestination");
    assert_eq!(
        cli(&postfix, None).0.relay_domains().unwrap(),
        "$mydestination"
    );
    first
        .set_relay_domains("$mydestination, a.example")
        .unwrap();
    assert_eq!(first.relay_domains().unwrap(), "$mydestination, a.example");
}

#[test]
fn maps_built_ahead_are_installed_by_the_writes_of_the_same_text() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    let table_path = postfix.config_dir().join("relay_domains");
    let cli = cli.with_relay_domains_map(table_path.clone());
    cli.write_transport(&block(&["a.example"])).unwrap();
    let transport = block(&["a.example", "b.example"]);
    let table = "a.example OK\nb.example OK\n";

    cli.prepare_maps(Some(&transport), Some(table), None);
    // Built under the temporary names, nothing installed yet.
    assert_eq!(cli.lookup_transport("b.example").unwrap(), None);
    // One private build directory per map.
    assert_eq!(temp_files(&postfix).len(), 2, "{:?}", temp_files(&postfix));
    let build_dir = temp_files(&postfix)
        .into_iter()
        .find(|name| name.starts_with(".transport."))
        .unwrap();
    let built_db = postfix.config_dir().join(build_dir).join("transport.db");
    let built_inode = fs::metadata(&built_db).unwrap().ino();

    cli.write_transport(&transport).unwrap();
    // The write renamed the database built ahead rather than building another.
    assert_eq!(
        fs::metadata(cli.transport_database()).unwrap().ino(),
        built_inode
    );
    assert_eq!(
        fs::read_to_string(postfix.transport_file()).unwrap(),
        transport
    );
    cli.write_relay_domains_map(table).unwrap();
    assert_eq!(fs::read_to_string(&table_path).unwrap(), table);
    assert!(cli.transport_map_is_fresh().unwrap());
    assert!(cli.relay_domains_map_is_fresh().unwrap());
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
    assert_eq!(
        cli.lookup_transports(&["b.example", "nowhere.example", "a.example"])
            .unwrap(),
        [Some(HOP.to_owned()), None, Some(HOP.to_owned())]
    );
    let found = postfix
        .command(
            "/usr/sbin/postmap",
            &["-q", "b.example", &format!("hash:{}", table_path.display())],
        )
        .unwrap();
    assert_eq!(found.trim(), "OK");
}

#[test]
fn a_write_of_other_text_ignores_the_build_ahead_and_discard_removes_it() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, _dir) = cli(&postfix, None);
    let cli = cli.with_relay_domains_map(postfix.config_dir().join("relay_domains"));
    cli.prepare_maps(
        Some(&block(&["stale.example"])),
        Some("stale.example OK\n"),
        None,
    );
    cli.write_transport(&block(&["fresh.example"])).unwrap();
    assert_eq!(cli.lookup_transport("stale.example").unwrap(), None);
    assert_eq!(
        cli.lookup_transport("fresh.example").unwrap().as_deref(),
        Some(HOP)
    );
    // The table's build was never installed: a failed run discards it.
    assert_eq!(temp_files(&postfix).len(), 1, "{:?}", temp_files(&postfix));
    cli.discard_prepared();
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
    assert!(!postfix.config_dir().join("relay_domains").exists());
}

#[test]
fn a_failed_build_ahead_is_reported_by_its_write_and_leaves_the_map() {
    let postfix = Postfix::start("a.example").unwrap();
    let (good, dir) = cli(&postfix, None);
    good.write_transport(&block(&["a.example"])).unwrap();
    let db_before = fs::read(good.transport_database()).unwrap();
    let commands = failing_commands("postmap");
    let mut s = settings(&postfix, &dir.path().join("backup"), Some("hash"));
    s.command_dir = commands.path().to_owned();
    let bad = PostfixCli::new(s)
        .unwrap()
        .with_relay_domains_map(postfix.config_dir().join("relay_domains"));
    let transport = block(&["a.example", "b.example"]);
    bad.prepare_maps(Some(&transport), Some("a.example OK\n"), None);
    assert!(
        temp_files(&postfix).is_empty(),
        "{:?}",
        temp_files(&postfix)
    );
    match bad.write_transport(&transport) {
        Err(PostfixError::CommandFailed { stderr, .. }) => {
            assert_eq!(stderr, "postmap: fatal: stand-in failure");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
    assert_eq!(fs::read(good.transport_database()).unwrap(), db_before);
    assert_eq!(
        good.lookup_transports(&["a.example", "b.example"]).unwrap(),
        [Some(HOP.to_owned()), None]
    );
    assert_eq!(
        good.lookup_transports(&["x.example", "y.example"]).unwrap(),
        [None, None]
    );
}

/// Postfix commands that log each postconf run to `calls` before running the real one.
fn counting_commands(calls: &Path) -> tempfile::TempDir {
    stand_in_commands(
        "postconf",
        &format!(
            "echo \"$*\" >> {}\nexec /usr/sbin/postconf \"$@\"",
            calls.display()
        ),
    )
}

#[test]
fn postconf_answers_are_reused_only_while_main_cf_is_the_same_file() {
    let postfix = Postfix::start("a.example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let commands = counting_commands(&calls);
    let mut s = settings(&postfix, &dir.path().join("backup"), None);
    s.command_dir = commands.path().to_owned();
    let cache = dir.path().join("postconf.cache");
    let count = || {
        fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // main.cf was just written by the testbed: too recent to be trusted, so not cached.
    let cli = PostfixCli::with_postconf_cache(s.clone(), &cache).unwrap();
    assert_eq!(cli.relay_domains().unwrap(), "a.example");
    assert_eq!(count(), 1);
    assert!(!cache.exists());

    std::thread::sleep(Duration::from_millis(2100));
    let cli = PostfixCli::with_postconf_cache(s.clone(), &cache).unwrap();
    assert_eq!(cli.relay_domains().unwrap(), "a.example");
    assert_eq!(count(), 2);
    assert!(cache.exists());
    // The same main.cf: no postconf at all, the same answers.
    let cli = PostfixCli::with_postconf_cache(s.clone(), &cache).unwrap();
    assert_eq!(count(), 2);
    assert_eq!(cli.relay_domains().unwrap(), "a.example");
    assert_eq!(cli.map_type(), "hash");
    assert_eq!(
        cli.transport_maps(),
        format!("hash:{}", postfix.transport_file().display())
    );
    // A later read after a write asks postconf again.
    cli.set_relay_domains("a.example, b.example").unwrap();
    assert_eq!(count(), 3);
    assert_eq!(cli.relay_domains().unwrap(), "a.example, b.example");
    assert_eq!(count(), 4);
    // main.cf is another file now: postconf runs, and sees the new value.
    let cli = PostfixCli::with_postconf_cache(s, &cache).unwrap();
    assert_eq!(count(), 5);
    assert_eq!(cli.relay_domains().unwrap(), "a.example, b.example");
}

/// Recipient validation's side of the boundary, against the real Postfix: the table is
/// installed and answers `postmap -q` (keys folded as Postfix folds them), `relay_recipient_maps`
/// is set and read back (also by a new instance's one startup postconf), and the backup
/// generation holds both.
#[test]
fn the_recipients_table_and_relay_recipient_maps_round_trip() {
    let postfix = Postfix::start("a.example").unwrap();
    let (cli, dir) = cli_of(&postfix);
    let table = postfix.config_dir().join("relay_recipients");
    let cli = cli.with_recipients_map(table.clone());
    assert_eq!(cli.relay_recipient_maps().unwrap(), "");
    assert_eq!(cli.read_recipients_map().unwrap(), None);
    assert!(cli.recipients_map_is_fresh().unwrap(), "no source yet");

    let text = "# relay-sync: recipients table\n@b.example OK\nalice@a.example OK\n".to_owned();
    cli.write_recipients_map(&text).unwrap();
    assert_eq!(cli.read_recipients_map().unwrap().as_deref(), Some(&*text));
    assert!(cli.recipients_map_is_fresh().unwrap());
    assert_eq!(
        cli.lookup_recipients(&["alice@a.example", "bob@a.example", "@b.example"])
            .unwrap(),
        [Some("OK".to_owned()), None, Some("OK".to_owned())]
    );
    // Postfix folds the address it looks up, as relay-core folds the keys it writes.
    let found = postfix
        .command(
            "/usr/sbin/postmap",
            &[
                "-q",
                "Alice@A.example",
                &format!("hash:{}", table.display()),
            ],
        )
        .unwrap();
    assert_eq!(found.trim(), "OK");

    let value = format!("hash:/etc/postfix/other, hash:{}", table.display());
    cli.set_relay_recipient_maps(&value).unwrap();
    assert_eq!(postfix.postconf("relay_recipient_maps").unwrap(), value);
    assert!(cli
        .set_relay_recipient_maps("hash:/x\nrelay_domains = *")
        .is_err());
    // Read by a postconf of its own without recipient validation, by the startup one with it.
    let (again, dir2) = cli_of(&postfix);
    assert_eq!(again.relay_recipient_maps().unwrap(), value);
    let mut with = settings(&postfix, &dir2.path().join("backup"), None);
    with.recipient_validation = true;
    let with = PostfixCli::new(with).unwrap();
    assert_eq!(with.relay_recipient_maps().unwrap(), value);
    // The header alone tells relay-sync's table from anyone else's, without reading it all.
    assert_eq!(
        cli.recipients_map_header().as_deref(),
        Some("# relay-sync: recipients table")
    );

    let backup = cli.backup("a.example", None).unwrap();
    let files = cli
        .backup_recipients(&backup.stamp, &value, Some(&text))
        .unwrap();
    assert_eq!(files.len(), 2);
    let contents = relay_postfix::read_backup(&dir.path().join("backup"), None).unwrap();
    assert_eq!(contents.relay_recipient_maps.as_deref(), Some(&*value));
    assert_eq!(contents.recipients_map.as_deref(), Some(&*text));
}

/// [`cli`], for tests whose own binding is named `cli`.
fn cli_of(postfix: &Postfix) -> (PostfixCli, tempfile::TempDir) {
    cli(postfix, None)
}
