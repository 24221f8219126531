//! relay-postfix against a real, private Postfix instance (relay-testbed).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use relay_postfix::{PostfixCli, PostfixError, PostfixRead, PostfixSettings, PostfixWrite};
use relay_testbed::Postfix;

const HOP: &str = "smtp:[127.0.0.1]:2525";

fn settings(postfix: &Postfix, backups: &Path, map_type: Option<&str>) -> PostfixSettings {
    PostfixSettings {
        config_dir: postfix.config_dir(),
        command_dir: PathBuf::from("/usr/sbin"),
        command_prefix: Vec::new(),
        transport_file: postfix.transport_file(),
        map_type: map_type.map(str::to_owned),
        backup_dir: backups.to_owned(),
        backup_keep: 5,
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

/// A command directory where `postmap` (or another command) is a stand-in that fails, and the
/// others are the real ones.
fn failing_commands(failing: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["postconf", "postmap", "postfix"] {
        let path = dir.path().join(name);
        if name == failing {
            fs::write(
                &path,
                format!("#!/bin/sh\necho \"{name}: fatal: stand-in failure\" >&2\nexit 1\n"),
            )
            .unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::os::unix::fs::symlink(format!("/usr/sbin/{name}"), &path).unwrap();
        }
    }
    dir
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
            assert!(command.contains(".transport.relay-sync.tmp"), "{command}");
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
