//! Packaging: the .deb and .rpm that `cargo xtask dist` ships, built here by the same script
//! from the debug binary (a release build takes minutes on two cores; the layout, modes and
//! the installed binary's behaviour do not depend on the profile).
//!
//! The test installs the .deb on this machine with `dpkg -i` (CI runs as root on a throwaway
//! machine), runs the installed binary's `check` against a sandbox gateway, and purges the
//! package again, also when an assertion fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gateway::{Gateway, BIN};

const INSTALLED: &str = "/usr/bin/relay-sync";

/// Runs a command and returns its stdout; panics with its stderr when it fails.
fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when dropped, so a failed assertion does not leave it installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "relay-sync"])
            .output();
    }
}

/// Builds both packages from the debug binary into `out` with the script `cargo xtask dist`
/// uses.
fn build_packages(out: &Path) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/build-packages.sh");
    for (tool, package) in [("/usr/bin/rpmbuild", "rpm"), ("/usr/bin/strip", "binutils")] {
        relay_testbed::require(tool, package).unwrap();
    }
    let built = Command::new(script)
        .args([BIN, out.to_str().unwrap(), "0.0.0-test"])
        .env("FAST", "1")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "build-packages.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let paths: Vec<PathBuf> = String::from_utf8_lossy(&built.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    (paths[0].clone(), paths[1].clone())
}

/// `mode owner path` lines of `dpkg-deb -c` (sizes and dates left out).
fn deb_listing(deb: &Path) -> Vec<(String, String)> {
    output("dpkg-deb", &["-c", deb.to_str().unwrap()])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields[5].trim_start_matches('.').trim_end_matches('/');
            (
                fields[0].to_owned(),
                format!("{} {}", fields[1], if path.is_empty() { "/" } else { path }),
            )
        })
        .collect()
}

#[test]
fn deb_and_rpm_install_the_documented_files() {
    let out = tempfile::tempdir().unwrap();
    let (deb, rpm) = build_packages(out.path());

    // The .deb's contents: paths, owners and modes, as the document asks.
    let listing = deb_listing(&deb);
    let text: String = listing
        .iter()
        .map(|(mode, rest)| format!("{mode} {rest}\n"))
        .collect();
    insta::assert_snapshot!("deb_contents", text);

    // The .rpm holds the same files with the same modes.
    let rpm_listing = output("rpm", &["-qlpv", rpm.to_str().unwrap()]);
    let mut rpm_entries = 0;
    for line in rpm_listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, group, path) = (fields[0], fields[2], fields[3], fields[8]);
        assert_eq!((owner, group), ("root", "root"), "{line}");
        let in_deb = listing
            .iter()
            .find(|(_, rest)| rest == &format!("root/root {path}"))
            .unwrap_or_else(|| panic!("{path} is in the .rpm but not in the .deb"));
        assert_eq!(mode, in_deb.0, "mode of {path}");
        rpm_entries += 1;
    }
    assert_eq!(rpm_entries, 21, "{rpm_listing}");
    let conffiles = output("dpkg-deb", &["-I", deb.to_str().unwrap(), "conffiles"]);
    assert_eq!(
        conffiles,
        "/opt/mailserver/config/relay-sync.conf\n/etc/logrotate.d/relay-sync\n"
    );
    let rpm_config = output("rpm", &["-qcp", rpm.to_str().unwrap()]);
    assert_eq!(
        rpm_config,
        "/etc/logrotate.d/relay-sync\n/opt/mailserver/config/relay-sync.conf\n"
    );

    // Installed here, the binary checks a real gateway.
    let gw = Gateway::start("kuma8088.com", "");
    let _installed = Installed;
    output("dpkg", &["-i", deb.to_str().unwrap()]);
    for (path, mode) in [
        ("/opt/mailserver/config/relay-sync.conf", 0o600),
        ("/opt/mailserver/backup", 0o700),
        ("/var/log/mailserver", 0o750),
        ("/var/lib/relay-sync", 0o700),
        (INSTALLED, 0o755),
    ] {
        let actual = fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(actual, mode, "{path}: {actual:o}");
    }
    let run = gw.run_program(INSTALLED, &["check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");

    // The shipped SQL creates a user that check finds read-only.
    let sql = fs::read_to_string("/usr/share/relay-sync/create-user.sql")
        .unwrap()
        .replace("GATEWAY_IP", "127.0.0.1")
        .replace("CHANGE_ME_PASSWORD", "relay-sync-test-pw");
    gw.sql("DROP USER 'relay_sync'@'127.0.0.1'");
    gw.sql(&sql);
    let run = gw.run_program(INSTALLED, &["check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("ok   grants           relay_sync has SELECT on mailserver_usermgmt.domains and nothing more"),
        "{run:?}"
    );

    // The man page and completions were generated from the binary's clap definition.
    let man = output("sh", &["-c", "zcat /usr/share/man/man1/relay-sync.1.gz"]);
    assert!(man.contains(".TH relay-sync 1"), "{man}");
    for command in ["check", "status", "rollback", "backups"] {
        assert!(man.contains(command), "man page lacks {command}");
    }
    let check_page = output(
        "sh",
        &["-c", "zcat /usr/share/man/man1/relay-sync-check.1.gz"],
    );
    assert!(
        check_page.contains(".TH relay-sync-check 1"),
        "{check_page}"
    );
    assert!(check_page.contains("json"), "{check_page}");
    let bash = fs::read_to_string("/usr/share/bash-completion/completions/relay-sync").unwrap();
    assert!(
        bash.contains("rollback") && bash.contains("--json"),
        "{bash}"
    );
}

/// `--help` works for every command, and names what the issue asks for.
#[test]
fn every_command_has_help() {
    for (command, wanted) in [
        ("sync", "--dry-run"),
        ("check", "--json"),
        ("status", "--json"),
        ("rollback", "--to <STAMP>"),
        ("backups", "BACKUP_DIR"),
        ("watch", "POLL_INTERVAL"),
        ("status", "--max-age <SECONDS>"),
    ] {
        let help = output(BIN, &[command, "--help"]);
        assert!(
            help.contains(wanted),
            "{command} --help lacks {wanted}:\n{help}"
        );
    }
    let top = output(BIN, &["--help"]);
    for command in ["sync", "check", "status", "rollback", "backups", "watch"] {
        assert!(top.contains(command), "--help lacks {command}:\n{top}");
    }
    // The generators are hidden from --help but work.
    assert!(!top.contains("completions"), "{top}");
    assert!(output(BIN, &["completions", "zsh"]).contains("#compdef relay-sync"));
}
