//! Packaging: the .deb and .rpm that `cargo xtask dist` ships, built here by the same script
//! from the debug binary (a release build takes minutes on two cores; the layout, modes and
//! the installed binary's behaviour do not depend on the profile).
//!
//! The lifecycle test installs the .deb on this machine (CI runs as root on a throwaway
//! machine), checks the installed binary against a sandbox gateway, enables the timer,
//! upgrades with a locally modified conffile, removes and purges, checking the file system
//! after each step. Install and upgrade run as on a machine that runs systemd (a mount
//! namespace with `/run/systemd/system` and a recording `systemctl`), so that what the
//! maintainer scripts ask of systemd is checked: an upgrade try-restarts the watcher. It purges the package and removes what it created also when an assertion
//! fails, and refuses to start when relay-sync is already installed (it would purge it).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::gateway::{Gateway, BIN};

const INSTALLED: &str = "/usr/bin/relay-sync";
const CONF: &str = "/opt/mailserver/config/relay-sync.conf";
const BACKUP_DIR: &str = "/opt/mailserver/backup";
const STATE_DIR: &str = "/var/lib/relay-sync";
const LOG_FILE: &str = "/var/log/mailserver/relay-sync.log";
const TIMER_LINK: &str = "/etc/systemd/system/timers.target.wants/relay-sync.timer";
/// What deb-systemd-helper records for the timer (purge must remove it).
const DSH_STATE: &str = "/var/lib/systemd/deb-systemd-helper-enabled/relay-sync.timer.dsh-also";
/// A backup generation the test puts in BACKUP_DIR: purge must keep it.
const GENERATION: &str = "/opt/mailserver/backup/transport.20260101-000000.bak";

/// Runs a command and returns its stdout; panics with its stderr when it fails.
fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with the install command when a tool the test needs is missing.
fn require(tools: &[(&str, &str)]) {
    for (tool, package) in tools {
        relay_testbed::require(tool, package).unwrap();
    }
}

/// Purges the package and removes what the test created when dropped, so that a failed
/// assertion leaves the machine as it was.
struct Installed {
    /// /opt/mailserver did not exist before the test: remove it whole afterwards.
    created_opt: bool,
    /// Held until after the purge: two runs of this test on one machine (two checkouts)
    /// take turns instead of purging each other's package.
    _turn: fs::File,
}

impl Installed {
    fn new() -> Installed {
        let turn = fs::File::create("/run/lock/relay-sync-packaging-test.lock")
            .or_else(|_| fs::File::create("/tmp/relay-sync-packaging-test.lock"))
            .unwrap();
        turn.lock().unwrap();
        let listed = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", "relay-sync"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains("installed")
                && !Path::new(INSTALLED).exists(),
            "relay-sync is already installed on this machine; the packaging test would purge \
             it: `dpkg --purge relay-sync` first"
        );
        Installed {
            created_opt: !Path::new("/opt/mailserver").exists(),
            _turn: turn,
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "relay-sync"])
            .output();
        let _ = fs::remove_file(GENERATION);
        let _ = fs::remove_file(TIMER_LINK);
        if self.created_opt {
            let _ = fs::remove_dir_all("/opt/mailserver");
        }
    }
}

/// Builds both packages of `version` from the debug binary into `out` with the script
/// `cargo xtask dist` uses.
fn build_packages(out: &Path, version: &str) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/build-packages.sh");
    require(&[
        ("/usr/bin/rpmbuild", "rpm"),
        ("/usr/bin/strip", "binutils"),
        ("/usr/bin/dpkg-shlibdeps", "dpkg-dev"),
    ]);
    let built = Command::new(script)
        .args([BIN, out.to_str().unwrap(), version])
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

/// Runs `dpkg ARGS` as on a machine that runs systemd and returns the `systemctl` calls the
/// maintainer scripts made: in a mount namespace of its own, /run is a fresh tmpfs holding
/// `/run/systemd/system` (what the scripts look for), a stand-in `systemctl` that records its
/// arguments is first on `PATH`, and `policy-rc.d` (a container's refuses every start) allows.
/// Nothing outside the namespace sees the mounts.
fn dpkg_under_systemd(args: &[&str]) -> Vec<String> {
    require(&[("/usr/bin/unshare", "util-linux")]);
    let fake = tempfile::tempdir().unwrap();
    let bin = fake.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let calls = fake.path().join("systemctl.calls");
    let systemctl = bin.join("systemctl");
    fs::write(
        &systemctl,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
    let allow = fake.path().join("policy-rc.d");
    fs::write(&allow, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&allow, fs::Permissions::from_mode(0o755)).unwrap();
    let script = r#"
        set -e
        mount -t tmpfs tmpfs /run
        mkdir -p /run/systemd/system
        if [ -e /usr/sbin/policy-rc.d ]; then mount --bind "$1" /usr/sbin/policy-rc.d; fi
        PATH="$2:$PATH"; shift 2
        exec dpkg "$@"
    "#;
    let mut argv = vec![
        "--mount",
        "sh",
        "-c",
        script,
        "sh",
        allow.to_str().unwrap(),
        bin.to_str().unwrap(),
    ];
    argv.extend(args);
    output("unshare", &argv);
    fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What the .rpm's `%postun` runs with `$1` = `instances` (1 after an upgrade, 0 after an
/// erase): the scriptlet, run by `sh` with a stand-in `systemctl` first on `PATH`; returns its
/// `systemctl` calls.
fn rpm_postun_calls(rpm: &Path, instances: &str) -> Vec<String> {
    let scriptlet = output(
        "rpm",
        &["-qp", "--queryformat", "%{POSTUN}", rpm.to_str().unwrap()],
    );
    let fake = tempfile::tempdir().unwrap();
    let calls = fake.path().join("systemctl.calls");
    let systemctl = fake.path().join("systemctl");
    fs::write(
        &systemctl,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = Command::new("sh")
        .args(["-c", &scriptlet, "postun", instances])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "%postun {instances}: {ran:?}\n{scriptlet}"
    );
    fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `(mode, "owner path")` of `dpkg-deb -c` (sizes and dates left out).
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

fn mode(path: &str) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

fn exists(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The packages' contents, metadata and scripts, and what lintian and rpmlint say of them.
fn check_built_packages(deb: &Path, rpm: &Path) {
    let (deb_s, rpm_s) = (deb.to_str().unwrap(), rpm.to_str().unwrap());

    // The .deb's contents: paths, owners and modes, as the document asks.
    let listing = deb_listing(deb);
    let text: String = listing
        .iter()
        .map(|(mode, rest)| format!("{mode} {rest}\n"))
        .collect();
    insta::assert_snapshot!("deb_contents", text);

    // The .rpm holds the same files with the same modes, but for each distribution's own
    // places: Debian's changelog, lintian overrides and zsh directory against Fedora's.
    let deb_only = [
        "/usr/share/doc/relay-sync/changelog.gz",
        "/usr/share/lintian",
        "/usr/share/lintian/overrides",
        "/usr/share/lintian/overrides/relay-sync",
        "/usr/share/zsh/vendor-completions",
        "/usr/share/zsh/vendor-completions/_relay-sync",
    ];
    let rpm_listing = output("rpm", &["-qlpv", rpm_s]);
    let mut rpm_paths = Vec::new();
    for line in rpm_listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, group, path) = (fields[0], fields[2], fields[3], fields[8]);
        assert_eq!((owner, group), ("root", "root"), "{line}");
        rpm_paths.push(path.to_owned());
        if path == "/usr/share/zsh/site-functions/_relay-sync" {
            assert_eq!(mode, "-rw-r--r--", "{line}");
            continue;
        }
        let in_deb = listing
            .iter()
            .find(|(_, rest)| rest == &format!("root/root {path}"))
            .unwrap_or_else(|| panic!("{path} is in the .rpm but not in the .deb"));
        assert_eq!(mode, in_deb.0, "mode of {path}");
    }
    for (_, rest) in listing.iter().filter(|(mode, _)| !mode.starts_with('d')) {
        let path = rest.trim_start_matches("root/root ");
        assert!(
            rpm_paths.iter().any(|p| p == path) || deb_only.contains(&path),
            "{path} is in the .deb but not in the .rpm"
        );
    }
    assert!(
        rpm_paths.contains(&"/usr/share/zsh/site-functions/_relay-sync".to_owned()),
        "{rpm_listing}"
    );

    // Conffiles, kept on upgrade by both.
    let conffiles = output("dpkg-deb", &["-I", deb_s, "conffiles"]);
    assert_eq!(conffiles, format!("{CONF}\n/etc/logrotate.d/relay-sync\n"));
    assert_eq!(
        output("rpm", &["-qcp", rpm_s]),
        format!("/etc/logrotate.d/relay-sync\n{CONF}\n")
    );

    // The libc bound is computed from the binary, not written by hand.
    let control = output("dpkg-deb", &["-f", deb_s, "Depends"]);
    assert!(control.starts_with("libc6 (>= 2."), "Depends: {control}");
    let requires = output("rpm", &["-qp", "--requires", rpm_s]);
    assert!(
        requires.contains("libc.so.6(GLIBC_2.") && requires.contains("(64bit)"),
        "{requires}"
    );

    // Maintainer scripts: the .deb's, and the RPM's systemd macros.
    for script in ["postinst", "prerm", "postrm", "md5sums"] {
        let text = output("dpkg-deb", &["-I", deb_s, script]);
        assert!(!text.is_empty(), "{script} is empty");
    }
    let postrm = output("dpkg-deb", &["-I", deb_s, "postrm"]);
    let commands: String = postrm
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect();
    assert!(
        commands.contains("rm -rf /var/lib/relay-sync") && !commands.contains(BACKUP_DIR),
        "purge removes STATE_DIR and never names BACKUP_DIR:\n{postrm}"
    );
    let scripts = output("rpm", &["-qp", "--scripts", rpm_s]);
    for wanted in [
        "systemctl --no-reload preset relay-sync.service relay-sync.timer",
        "systemctl --no-reload disable --now relay-sync.timer relay-sync.service",
        "systemctl daemon-reload",
    ] {
        assert!(
            scripts.contains(wanted),
            "rpm scripts lack {wanted}:\n{scripts}"
        );
    }
    // The .rpm's upgrade try-restarts the watcher too; an erase does not.
    assert_eq!(
        rpm_postun_calls(rpm, "1")
            .iter()
            .filter(|c| c.contains("restart"))
            .collect::<Vec<_>>(),
        ["try-restart relay-sync-watch.service"]
    );
    assert!(
        !rpm_postun_calls(rpm, "0")
            .iter()
            .any(|c| c.contains("restart")),
        "an erase restarts nothing"
    );
    let changelog = output("rpm", &["-qp", "--changelog", rpm_s]);
    assert!(changelog.contains("relay-sync maintainers"), "{changelog}");

    // lintian and rpmlint: no error and no warning; what is left is an override with its
    // reason (packaging/deb/lintian-overrides, packaging/rpm/rpmlint.toml).
    require(&[
        ("/usr/bin/lintian", "lintian"),
        ("/usr/bin/rpmlint", "rpmlint"),
    ]);
    let lintian = Command::new("lintian")
        .args(["--pedantic", "--fail-on", "error,warning", deb_s])
        .output()
        .unwrap();
    let lintian_out = String::from_utf8_lossy(&lintian.stdout);
    assert!(
        lintian.status.success()
            && !lintian_out
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian ({}):\n{lintian_out}{}",
        lintian.status,
        String::from_utf8_lossy(&lintian.stderr)
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/rpm/rpmlint.toml");
    let rpmlint = Command::new("rpmlint")
        .args(["-c", config.to_str().unwrap(), rpm_s])
        .output()
        .unwrap();
    let rpmlint_out = String::from_utf8_lossy(&rpmlint.stdout);
    assert!(
        rpmlint.status.success() && rpmlint_out.contains("0 errors, 0 warnings"),
        "rpmlint ({}):\n{rpmlint_out}{}",
        rpmlint.status,
        String::from_utf8_lossy(&rpmlint.stderr)
    );
}

/// Every man page relay-sync(1) and the others refer to is shipped, and relay-sync(1) has the
/// sections a reader looks for.
fn check_installed_man_pages() {
    if !Path::new("/usr/share/man/man1/relay-sync.1.gz").exists() {
        // Slim container images tell dpkg to skip man pages.
        let excluded = Command::new("sh")
            .args([
                "-c",
                "grep -rs 'path-exclude.*/usr/share/man' /etc/dpkg/dpkg.cfg.d",
            ])
            .output()
            .unwrap();
        panic!(
            "relay-sync(1) was not installed; dpkg excludes: {}",
            String::from_utf8_lossy(&excluded.stdout)
        );
    }
    let page = |name: &str, section: &str| {
        output(
            "sh",
            &[
                "-c",
                &format!("zcat /usr/share/man/man{section}/{name}.{section}.gz"),
            ],
        )
    };
    let man = page("relay-sync", "1");
    assert!(man.contains(".TH relay-sync 1"), "{man}");
    for section in [
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
        "SUBCOMMANDS",
    ] {
        assert!(
            man.contains(&format!(".SH \"{section}\"")) || man.contains(&format!(".SH {section}")),
            "relay-sync(1) lacks {section}:\n{man}"
        );
    }
    assert!(man.contains("\\fB6\\fR"), "EXIT STATUS lacks 6:\n{man}");
    let mut shipped = Vec::new();
    for section in ["1", "5"] {
        if let Ok(dir) = fs::read_dir(format!("/usr/share/man/man{section}")) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(&format!(".{section}.gz")) {
                    if stem.starts_with("relay-sync") {
                        shipped.push((stem.to_owned(), section));
                    }
                }
            }
        }
    }
    assert!(shipped.len() >= 6, "{shipped:?}");
    for (stem, section) in &shipped {
        let text = page(stem, section);
        // References look like `relay\-sync\-check(1)` or `\fBrelay\-sync\fR(1)`.
        let plain = text
            .replace("\\fB", "")
            .replace("\\fR", "")
            .replace("\\-", "-");
        for (at, _) in plain.match_indices("relay-sync") {
            let rest = &plain[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
                .unwrap_or(rest.len());
            if let Some(section) = rest[end..].strip_prefix('(') {
                let referred = (rest[..end].to_owned(), &section[..1]);
                assert!(
                    shipped
                        .iter()
                        .any(|(s, n)| *s == referred.0 && *n == referred.1),
                    "{stem}({section}) refers to {}({}), which is not shipped",
                    referred.0,
                    referred.1
                );
            }
        }
    }
    assert!(
        !man.contains("relay\\-sync\\-help"),
        "relay-sync(1) names relay-sync-help"
    );
    let check_page = page("relay-sync-check", "1");
    assert!(
        check_page.contains(".TH relay-sync-check 1"),
        "{check_page}"
    );
    assert!(check_page.contains("json"), "{check_page}");
    // man-db finds the pages.
    let found = output("man", &["-w", "relay-sync-rollback"]);
    assert!(found.contains("relay-sync-rollback.1"), "{found}");
}

/// What the packages ship besides the program: the JSON Schemas as committed (docs/schema/),
/// the monitoring mixin as in packaging/monitoring/, relay-sync's licence texts, and the
/// licences of the crates linked into the binary, generated when the package was built.
fn check_installed_contracts_and_licences() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (from, to) in [
        ("docs/schema", "/usr/share/relay-sync/schema"),
        ("packaging/monitoring", "/usr/share/relay-sync/monitoring"),
    ] {
        let mut shipped = 0;
        for entry in fs::read_dir(source.join(from)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // The rules' unit tests are run at build time; an operator loads the rest.
            if name.ends_with(".test.yml") {
                continue;
            }
            let installed = Path::new(to).join(&name);
            assert_eq!(
                fs::read(&installed).unwrap_or_else(|e| panic!("{}: {e}", installed.display())),
                fs::read(&path).unwrap(),
                "{} differs from {}",
                installed.display(),
                path.display()
            );
            assert_eq!(mode(installed.to_str().unwrap()), 0o644);
            shipped += 1;
        }
        assert!(shipped >= 2, "{to}: {shipped} files");
    }
    for name in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert_eq!(
            fs::read(format!("/usr/share/doc/relay-sync/{name}")).unwrap(),
            fs::read(source.join(name)).unwrap(),
            "{name}"
        );
    }
    let licences = fs::read_to_string("/usr/share/doc/relay-sync/THIRD-PARTY-LICENSES").unwrap();
    let listed: Vec<&str> = licences
        .lines()
        .skip_while(|line| !line.is_empty())
        .skip_while(|line| line.is_empty() || !line.contains(": "))
        .take_while(|line| !line.is_empty())
        .collect();
    assert!(listed.len() > 150, "{} crates listed", listed.len());
    for linked in ["tokio ", "mysql_async ", "clap ", "ring ", "aws-sdk-sns "] {
        assert!(
            listed.iter().any(|line| line.starts_with(linked)),
            "{linked}is not listed: {listed:?}"
        );
    }
    // Build tools and test crates are not in the binary.
    for not_linked in ["proptest ", "insta ", "jsonschema ", "serde_derive ", "cc "] {
        assert!(
            !listed.iter().any(|line| line.starts_with(not_linked)),
            "{not_linked}is listed"
        );
    }
    assert!(
        licences.contains("Apache License") && licences.contains("Permission is hereby granted"),
        "the texts are missing"
    );
}

#[test]
fn deb_lifecycle_install_upgrade_remove_purge() {
    require(&[
        ("/usr/bin/deb-systemd-helper", "init-system-helpers"),
        ("/usr/bin/systemctl", "systemd"),
        ("/usr/bin/man", "man-db"),
    ]);
    let out = tempfile::tempdir().unwrap();
    let (deb, rpm) = build_packages(&out.path().join("1"), "0.1.0~test1");
    check_built_packages(&deb, &rpm);
    let (deb2, _) = build_packages(&out.path().join("2"), "0.1.0~test2");

    // Install: the documented files and modes, md5sums that match, the units known to
    // deb-systemd-helper but not enabled.
    let gw = Gateway::start("kuma8088.com", "");
    let _installed = Installed::new();
    // Installed as on a machine that runs systemd: the units are read, nothing is started.
    let calls = dpkg_under_systemd(&["-i", deb.to_str().unwrap()]);
    assert!(
        calls.iter().any(|c| c.contains("daemon-reload")),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("restart") || c.contains("start ")),
        "an install starts nothing: {calls:?}"
    );
    for (path, wanted) in [
        (CONF, 0o600),
        (BACKUP_DIR, 0o700),
        ("/var/log/mailserver", 0o750),
        (STATE_DIR, 0o700),
        (INSTALLED, 0o755),
    ] {
        assert_eq!(mode(path), wanted, "{path}: {:o}", mode(path));
    }
    assert_eq!(output("dpkg", &["--verify", "relay-sync"]), "");
    assert!(!exists(TIMER_LINK), "the package must not enable the timer");
    assert!(
        exists(DSH_STATE),
        "postinst did not record the timer's state"
    );
    let verify = Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "/usr/lib/systemd/system/relay-sync.service",
            "/usr/lib/systemd/system/relay-sync.timer",
        ])
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    check_installed_man_pages();
    check_installed_contracts_and_licences();
    let bash = fs::read_to_string("/usr/share/bash-completion/completions/relay-sync").unwrap();
    assert!(
        bash.contains("rollback") && bash.contains("--json"),
        "{bash}"
    );

    // The installed binary checks a real gateway, and the shipped SQL creates a user that
    // check finds read-only.
    let run = gw.run_program(INSTALLED, &["check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let sql = fs::read_to_string("/usr/share/relay-sync/create-user.sql")
        .unwrap()
        .replace("GATEWAY_IP", "127.0.0.1")
        .replace("CHANGE_ME_PASSWORD", "relay-sync-test-pw");
    gw.sql("DROP USER 'relay_sync'@'127.0.0.1'");
    gw.sql(&sql);
    let run = gw.run_program(INSTALLED, &["check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "ok   grants           relay_sync has SELECT on mailserver_usermgmt.domains and nothing more"
        ),
        "{run:?}"
    );
    // The ECS-on-EC2 wrapper, as shipped, where docs/containers.md names it: relay-sync
    // accepts it as a POSTFIX_COMMAND_PREFIX it runs as root (`status` loads and vets the
    // config without running Postfix's commands).
    let wrapper = "/usr/share/relay-sync/container/relay-sync-container-exec";
    assert_eq!(
        fs::read(wrapper).unwrap(),
        fs::read(repo_root().join("packaging/container/relay-sync-container-exec")).unwrap()
    );
    assert_eq!(mode(wrapper), 0o755);
    let prefix = format!("{wrapper} docker com.amazonaws.ecs.container-name=postfix");
    let run = gw.run_program(
        INSTALLED,
        &["status"],
        &[("RELAY_SYNC_POSTFIX_COMMAND_PREFIX", &prefix)],
    );
    assert_eq!(run.code, 0, "{run:?}");

    // The operator enables the timer (systemctl works on the files when systemd is not
    // running, as in a container), edits the config, and relay-sync has run: state, a log and
    // a backup generation exist.
    output("systemctl", &["enable", "relay-sync.timer"]);
    assert!(exists(TIMER_LINK), "systemctl enable made no symlink");
    let mut conf = fs::read_to_string(CONF).unwrap();
    conf.push_str("# edited on this gateway\nMAX_REMOVE_PERCENT=30\n");
    fs::write(CONF, &conf).unwrap();
    fs::write(format!("{STATE_DIR}/state"), "last=0\n").unwrap();
    fs::write(LOG_FILE, "[2026-01-01 00:00:00] INFO: a run\n").unwrap();
    fs::write(GENERATION, "# a generation\n").unwrap();

    // Upgrade: the local edit and the enablement are kept, and a running watcher is
    // restarted so that the new binary runs (try-restart: a stopped one stays stopped); the
    // timer's oneshot service is not (that would run a sync).
    let calls = dpkg_under_systemd(&[
        "-i",
        "--force-confdef",
        "--force-confold",
        deb2.to_str().unwrap(),
    ]);
    let restarts: Vec<&String> = calls.iter().filter(|c| c.contains("restart")).collect();
    assert_eq!(
        restarts,
        ["try-restart relay-sync-watch.service"],
        "upgrade's systemctl calls: {calls:?}"
    );
    assert_eq!(
        output("dpkg-query", &["-W", "-f=${Version}", "relay-sync"]),
        "0.1.0~test2"
    );
    assert_eq!(
        fs::read_to_string(CONF).unwrap(),
        conf,
        "upgrade lost the edit"
    );
    assert_eq!(mode(CONF), 0o600);
    assert!(exists(TIMER_LINK), "upgrade disabled the timer");
    // Every file matches its checksum but the edited conffile.
    assert_eq!(
        output("dpkg", &["--verify", "relay-sync"]),
        format!("??5?????? c {CONF}\n")
    );

    // Remove: the program and the units go, the timer is disabled (no enabled timer left
    // pointing at a deleted service); the config, state, log and backups stay.
    output("dpkg", &["--remove", "relay-sync"]);
    for gone in [
        INSTALLED,
        "/usr/lib/systemd/system/relay-sync.service",
        "/usr/lib/systemd/system/relay-sync.timer",
        TIMER_LINK,
    ] {
        assert!(!exists(gone), "{gone} is left after remove");
    }
    assert_eq!(fs::read_to_string(CONF).unwrap(), conf);
    for kept in [GENERATION, LOG_FILE, STATE_DIR] {
        assert!(exists(kept), "{kept} is gone after remove");
    }

    // Purge: config, state, log and deb-systemd-helper's records go; the backup generation
    // stays.
    output("dpkg", &["--purge", "relay-sync"]);
    for gone in [CONF, STATE_DIR, LOG_FILE, DSH_STATE, "/var/log/mailserver"] {
        assert!(!exists(gone), "{gone} is left after purge");
    }
    assert_eq!(
        fs::read_to_string(GENERATION).unwrap(),
        "# a generation\n",
        "purge touched BACKUP_DIR"
    );
}

/// The unit's exposure as systemd rates it: 8.2 before issue 13's hardening, at most 4.0
/// now (packaging/README-unit.md explains each directive).
#[test]
fn unit_exposure_is_at_most_4() {
    require(&[("/usr/bin/systemd-analyze", "systemd")]);
    for name in ["relay-sync.service", "relay-sync-watch.service"] {
        let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../packaging")
            .join(name);
        let report = output(
            "systemd-analyze",
            &[
                "security",
                "--offline=true",
                "--no-pager",
                unit.to_str().unwrap(),
            ],
        );
        let score: f64 = report
            .lines()
            .find_map(|line| line.split(&format!("{name}: ")).nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|score| score.parse().ok())
            .unwrap_or_else(|| panic!("no overall exposure for {name} in:\n{report}"));
        assert!(score <= 4.0, "{name}: exposure {score} > 4.0:\n{report}");
    }
}

/// `relay-sync completions fish | head -1` and the like: a command that only prints ends
/// quietly when its reader goes away (SIGPIPE, as `cat` does), never with a panic or an error.
#[test]
fn printing_into_a_closed_pipe_never_panics() {
    // `status` and `backups` read files only: a config naming empty directories will do.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = dir.path().join("relay-sync.conf");
    fs::write(
        &config,
        format!(
            "DB_HOST=127.0.0.1\nDELL_RELAY_IP=127.0.0.1\nPOSTFIX_CONFIG_DIR={d}\n\
             BACKUP_DIR={d}/backup\nSTATE_DIR={d}/state\nLOG_FILE={d}/relay-sync.log\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let config = config.to_str().unwrap();
    for args in [
        &["completions", "fish"][..],
        &["completions", "bash"],
        &["man"],
        &["man", "check"],
        &["--config", config, "status"],
        &["--config", config, "status", "--json"],
        &["--config", config, "backups"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        // The reader is gone before the first write: every write fails with EPIPE.
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || out.status.signal() == Some(SIGPIPE),
            "relay-sync {args:?} into a closed pipe: {}\n{stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "relay-sync {args:?}: {stderr}");
    }
    // The issue's own command line.
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("set -o pipefail; {BIN} completions fish | head -1"),
        ])
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(128 + SIGPIPE),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGPIPE's number on Linux (the e2e tests do not link libc).
const SIGPIPE: i32 = 13;

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files an operator reads: the README and every file under `docs/` and `packaging/`.
fn operator_documents() -> Vec<PathBuf> {
    let mut files = vec![repo_root().join("README.md")];
    let mut dirs = vec![repo_root().join("docs"), repo_root().join("packaging")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Issue 22 finding 2: the README's cron example ran /usr/local/bin/relay-sync, which no
/// package installs. The cron lines the documents show are lines of the shipped cron file, that
/// file runs the binary where the packages put it, and no document names another place.
#[test]
fn documented_paths_are_the_installed_ones() {
    let shipped = fs::read_to_string(repo_root().join("packaging/relay-sync.cron")).unwrap();
    let runs: Vec<&str> = shipped
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains("relay-sync --config"))
        .collect();
    assert_eq!(runs.len(), 2, "{shipped}");
    for line in runs {
        assert!(line.contains(&format!(" {INSTALLED} --config")), "{line}");
    }
    let mut shown = 0;
    for path in operator_documents() {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let root = repo_root();
        let file = path.strip_prefix(&root).unwrap_or(&path);
        for block in text.split("```cron\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            for line in block.lines() {
                assert!(
                    shipped.lines().any(|shipped| shipped == line),
                    "{}: {line:?} is not a line of packaging/relay-sync.cron",
                    file.display()
                );
                shown += 1;
            }
        }
        // The binary itself, not a file named after it (the container wrapper
        // `relay-sync-container-exec`).
        let binary_at = text.match_indices("bin/relay-sync").filter(|(at, found)| {
            !text[at + found.len()..].starts_with(|c: char| c == '-' || c.is_alphanumeric())
        });
        for (at, _) in binary_at {
            assert!(
                text[..at].ends_with("usr/"),
                "{} names {:?}; the packages install {INSTALLED}",
                file.display(),
                &text[at.saturating_sub(20)..at + "bin/relay-sync".len()]
            );
        }
    }
    assert!(shown >= 2, "no ```cron block found in the README or docs/");
}

/// Issue 22 finding 3: the config file as shipped configures nothing site-specific, so a run
/// with it exits 2 saying what to set, and is not a failed sync: no state, no failure streak,
/// no alert, no metrics, no log. (Before, it named a database host of ours and ran: exit 3
/// "cannot read DB_PASSWORD_FILE", recorded and counted toward an alert.)
#[test]
fn the_shipped_config_runs_nothing_until_configured() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("relay-sync.conf");
    fs::copy(repo_root().join("packaging/relay-sync.conf"), &config).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let alerted = d.join("alerted");
    let env = [
        ("RELAY_SYNC_STATE_DIR", d.join("state")),
        ("RELAY_SYNC_LOG_FILE", d.join("log/relay-sync.log")),
        ("RELAY_SYNC_METRICS_FILE", d.join("relay_sync.prom")),
        ("RELAY_SYNC_BACKUP_DIR", d.join("backup")),
        ("RELAY_SYNC_POSTFIX_CONFIG_DIR", d.join("postfix")),
        ("RELAY_SYNC_ALERT_AFTER_FAILURES", PathBuf::from("1")),
        (
            "RELAY_SYNC_ALERT_COMMAND",
            PathBuf::from(format!("touch {}", alerted.display())),
        ),
    ];
    let expected = format!(
        "not configured: set DB_HOST and DELL_RELAY_IP in {}",
        config.display()
    );
    // Twice: a second run would alert if the first had counted as a failure.
    for args in [&[][..], &["sync"]] {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
    }
    for (name, path) in &env {
        if name.ends_with("_DIR") || name.ends_with("_FILE") {
            assert!(!path.exists(), "{name}: {} was written", path.display());
        }
    }
    assert!(!alerted.exists(), "the alert command ran");
    // `check` says the same, as a failed check.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("check")
        .envs(env.iter().map(|(name, value)| (name, value)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&expected), "{stdout}");
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

/// What bash's completion for relay-sync offers for the command line `words` (the last word is
/// the one being completed), through the function the shipped script registers, as bash calls
/// it on TAB: with `COMP_WORDS`, `COMP_CWORD` and the command, word and previous word as
/// arguments, reading `COMPREPLY`.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let program = r#"
        source "$1"; shift
        function=$(complete -p relay-sync | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
        [ -n "$function" ] || { echo "no completion registered for relay-sync" >&2; exit 1; }
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        "$function" relay-sync "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    output(
        "bash",
        &[&["-c", program, "bash", script.to_str().unwrap()], words].concat(),
    )
    .lines()
    .filter(|line| !line.is_empty())
    .map(str::to_owned)
    .collect()
}

/// What fish's completion offers for `line`: `complete -C` prints each candidate and its
/// description, separated by a tab.
fn fish_completes(script: &Path, line: &str) -> Vec<String> {
    let program = format!("source {}; complete -C '{line}'", script.display());
    output("fish", &["--no-config", "-c", &program])
        .lines()
        .map(|line| line.split('\t').next().unwrap_or_default().to_owned())
        .collect()
}

/// What zsh's completion system offers for `line`: an interactive zsh on a pseudo-terminal
/// (zsh/zpty) with `compinit` and the shipped `_relay-sync` on its `fpath` is sent the line and
/// a TAB; `compadd` is wrapped to write each candidate to a file, and each is kept once.
fn zsh_completes(dir: &Path, line: &str) -> Vec<String> {
    let matches = dir.join("zsh-matches");
    let _ = fs::remove_file(&matches);
    let program = r#"
        zmodload zsh/zpty
        zpty z zsh -f -i
        zpty -w z "PROMPT=''; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D"
        zpty -w z "compadd() { builtin compadd -O __m \"\$@\"; print -l -- \${__m} >> $2; builtin compadd \"\$@\" }"
        zpty -w -n z "$3"$'\t'
        # Read what the terminal shows until the completion has had time to run.
        local out
        for i in {1..30}; do
            sleep 0.1
            while zpty -r -t z out; do :; done
            [[ -s $2 ]] && break
        done
        zpty -d z
    "#;
    output(
        "timeout",
        &[
            "20",
            "zsh",
            "-f",
            "-c",
            program,
            "zsh",
            dir.to_str().unwrap(),
            matches.to_str().unwrap(),
            line,
        ],
    );
    // zsh may offer a candidate more than once (once per group it tries).
    let mut offered: Vec<String> = Vec::new();
    for line in fs::read_to_string(&matches).unwrap_or_default().lines() {
        if !line.is_empty() && !offered.iter().any(|o| o == line) {
            offered.push(line.to_owned());
        }
    }
    offered
}

/// Completion works in bash, zsh and fish for the commands and for a command's options
/// (`relay-sync status --j<TAB>`): clap_complete's bash script alone completes no option of a
/// command when the binary's name has a hyphen.
#[test]
fn completion_of_a_subcommand_option() {
    require(&[
        ("/bin/bash", "bash"),
        ("/usr/bin/zsh", "zsh"),
        ("/usr/bin/fish", "fish"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let bash = dir.path().join("relay-sync.bash");
    fs::write(&bash, output(BIN, &["completions", "bash"])).unwrap();
    assert_eq!(
        bash_completes(&bash, &["relay-sync", "status", "--j"]),
        ["--json"]
    );
    assert_eq!(bash_completes(&bash, &["relay-sync", "sta"]), ["status"]);
    let rollback = bash_completes(&bash, &["relay-sync", "rollback", "--"]);
    for option in ["--to", "--hold", "--config"] {
        assert!(rollback.iter().any(|o| o == option), "{rollback:?}");
    }
    assert_eq!(
        bash_completes(&bash, &["relay-sync", "completions", "fi"]),
        ["fish"]
    );

    let fish = dir.path().join("relay-sync.fish");
    fs::write(&fish, output(BIN, &["completions", "fish"])).unwrap();
    assert_eq!(fish_completes(&fish, "relay-sync status --j"), ["--json"]);
    assert_eq!(fish_completes(&fish, "relay-sync sta"), ["status"]);

    let zsh_dir = dir.path().join("zsh");
    fs::create_dir(&zsh_dir).unwrap();
    fs::write(
        zsh_dir.join("_relay-sync"),
        output(BIN, &["completions", "zsh"]),
    )
    .unwrap();
    assert_eq!(zsh_completes(&zsh_dir, "relay-sync status --j"), ["--json"]);
    assert_eq!(zsh_completes(&zsh_dir, "relay-sync sta"), ["status"]);
}
