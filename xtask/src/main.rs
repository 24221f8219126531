//! Project tooling, per the cargo-xtask pattern: `cargo xtask <command>`.
//!
//! - `test`: every test of the workspace: unit, property, snapshot, the real-component
//!   integration tests of relay-db, relay-postfix and relay-testbed, and the end-to-end suite,
//!   with the features the packages are built with (`aws`); a two-minute soak of the built
//!   watcher under chaos; then the config tests and the e2e refusals of `ALERT_SNS_TOPIC_ARN`
//!   and `DB_PASSWORD_SECRET` again without them.
//! - `test-e2e`: only the end-to-end suite (the built binary against a private MariaDB and
//!   Postfix).
//! - `demo`: one sync against a throwaway sandbox, to see what relay-sync does.
//! - `dist`: the release binary, packaged as a .deb and an .rpm in `target/dist/`.
//! - `soak`: `relay-sync watch` for a duration or a number of polls under a chaos schedule,
//!   with an observer of the invariants (issue 21); see `soak.rs`.
//! - `licenses OUT`: the licences of every third-party crate linked into the binary, written to
//!   OUT (the packages ship it; `packaging/build-packages.sh` runs it).
//! - `bench`: whole-process timings of the release binary against the floor (the bare Postfix
//!   work), written to `BENCHMARKS.md`; not part of `test`. `bench watch` and
//!   `bench recipients` run one part alone and rewrite only that part.
//!
//! Real components are required, not optional: a missing one fails with the `apt-get install`
//! command that provides it. That includes podman (with runc, mmdebstrap, uidmap and
//! catatonit): the container tests build Postfix and relay-sync images from Debian's packages
//! and run them.

// Build and test tooling, run by a developer or CI on their own checkout, never as the gateway.
#![allow(clippy::disallowed_methods)]

mod bench;
mod demo;
mod dist;
mod licenses;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub(crate) const USAGE: &str =
    "usage: cargo xtask <test | test-e2e | demo | dist | licenses | soak | bench>
  test       all tests: unit, property, snapshot, integration, end-to-end and a 2-minute soak
  test-e2e   end-to-end tests only (private MariaDB and Postfix on loopback)
  demo       one sync against a throwaway sandbox, explained
  dist       release binary, .deb and .rpm in target/dist/
  licenses OUT
             the licences of the third-party crates linked into relay-sync, to OUT
  bench      whole-process timings against the floor, written to BENCHMARKS.md
  soak [--duration 2m] [--polls N] [--poll-interval S] [--reconcile-interval S] [--bound S]
       [--domains N] [--calm N] [--release | --binary PATH] [--benchmarks]
             relay-sync watch (map and inline) against the real MariaDB and Postfix under a
             chaos schedule, with an observer of the invariants; ends when every limit given
             is reached (default 2 minutes); exits non-zero on any violation or missed target;
             --benchmarks writes its report as BENCHMARKS.md's soak section
  bench watch [--poll-interval S]
             only the watch-mode scenarios (propagation, idle cost), their section rewritten;
             --poll-interval tries another POLL_INTERVAL than the default
  bench recipients
             only the one-address change at 1M recipients, its row of the table rewritten
  sandbox [N] [map|inline] [USERS]
             the bench's sandbox synced to N domains (with USERS recipients and
             RECIPIENTS_QUERY set, map mode), held open for profiling by hand";

/// The cargo features the packages are built with (`dist`), and so the ones `test` tests.
pub(crate) const PACKAGE_FEATURES: &str = "relay-cli/aws";

fn main() {
    if let Err(error) = run() {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => {
            require_components()?;
            // Everything with the features the packages are built with (SNS alerts and the
            // password from Secrets Manager among them), then what a build without `aws` must
            // still do: read every other key and refuse ALERT_SNS_TOPIC_ARN and
            // DB_PASSWORD_SECRET. Only relay-ops and relay-cli are built twice.
            // Every step runs even when one fails, like --no-fail-fast within a step: a
            // failure in one must not hide the result of the others.
            // The embedding tests run the `admin` example as a program; `--all-targets` builds
            // examples only as test harnesses, so the program is built first.
            let steps: [&[&str]; 5] = [
                &[
                    "build",
                    "--workspace",
                    "--examples",
                    "--features",
                    PACKAGE_FEATURES,
                ],
                &[
                    "test",
                    "--workspace",
                    "--all-targets",
                    "--no-fail-fast",
                    "--features",
                    PACKAGE_FEATURES,
                ],
                &[
                    "test",
                    "--workspace",
                    "--doc",
                    "--features",
                    PACKAGE_FEATURES,
                ],
                &["test", "-p", "relay-ops", "--lib", "--", "config::"],
                &[
                    "test",
                    "-p",
                    "relay-cli",
                    "--test",
                    "e2e",
                    "--",
                    "sns::",
                    "secrets::",
                ],
            ];
            let (with_features, without) = steps.split_at(3);
            let mut failed: Vec<String> = with_features
                .iter()
                .filter_map(|args| cargo(args).err().map(|error| format!("{error:#}")))
                .collect();
            // The watcher under chaos for two minutes (issue 21), with the binary the steps
            // above built: before the steps below rebuild it without `aws`.
            if let Err(error) = soak::run(&project_root(), &soak::Options::quick()) {
                failed.push(format!("{error:#}"));
            }
            failed.extend(
                without
                    .iter()
                    .filter_map(|args| cargo(args).err().map(|error| format!("{error:#}"))),
            );
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("{}", failed.join("\n"))
            }
        }
        Some("test-e2e") => {
            require_components()?;
            cargo(&[
                "test",
                "-p",
                "relay-cli",
                "--test",
                "e2e",
                "--no-fail-fast",
                "--features",
                PACKAGE_FEATURES,
            ])
        }
        Some("demo") => {
            require_components()?;
            cargo(&["build", "-p", "relay-cli"])?;
            demo::run(&project_root().join("target/debug/relay-sync"))
        }
        Some("dist") => dist::run(&project_root()),
        Some("soak") => {
            require_components()?;
            soak::run(&project_root(), &soak::Options::parse(&args[1..])?)
        }
        Some("licenses") => match args.get(1) {
            Some(out) => licenses::write(&project_root(), Path::new(out)),
            None => bail!("usage: cargo xtask licenses OUT"),
        },
        Some("bench") if args.get(1).map(String::as_str) == Some("watch") => {
            require_components()?;
            cargo(&["build", "--release", "-p", "relay-cli"])?;
            bench::run_watch(
                &project_root(),
                &project_root().join("target/release/relay-sync"),
                &bench::watch::Options::parse(&args[2..])?,
            )
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("recipients") => {
            require_components()?;
            cargo(&["build", "--release", "-p", "relay-cli"])?;
            bench::run_recipients(
                &project_root(),
                &project_root().join("target/release/relay-sync"),
            )
        }
        Some("bench") => {
            require_components()?;
            cargo(&["build", "--release", "-p", "relay-cli"])?;
            bench::run(
                &project_root(),
                &project_root().join("target/release/relay-sync"),
            )
        }
        Some("sandbox") => {
            require_components()?;
            cargo(&["build", "--release", "-p", "relay-cli"])?;
            let n = match args.get(1) {
                Some(n) => n
                    .parse()
                    .context("sandbox: the domain count must be a number")?,
                None => 100,
            };
            let mode = match args.get(2).map(String::as_str) {
                None | Some("map") => "map",
                Some("inline") => "inline",
                Some(other) => bail!("sandbox: mode is map or inline, not {other:?}"),
            };
            let users = match args.get(3) {
                Some(users) if mode == "map" => Some(
                    users
                        .parse()
                        .context("sandbox: the user count must be a number")?,
                ),
                Some(_) => bail!("sandbox: recipients are benchmarked in map mode only"),
                None => None,
            };
            bench::hold(
                &project_root().join("target/release/relay-sync"),
                n,
                mode,
                users,
            )
        }
        _ => bail!("{USAGE}"),
    }
}

/// The workspace root, found from this crate's manifest directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs cargo (the one that runs us, via `$CARGO`) in the project root.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(project_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Fails early, with the install command, when a real component is missing: MariaDB,
/// Postfix, and podman with what the container tests need (they run Postfix, and relay-sync's
/// sidecar image, in real containers).
fn require_components() -> Result<()> {
    for (path, package) in [
        ("/usr/sbin/mariadbd", "mariadb-server"),
        ("/usr/bin/mariadb-install-db", "mariadb-server"),
        ("/usr/sbin/postfix", "postfix"),
        ("/usr/sbin/smtp-sink", "postfix"),
    ] {
        relay_testbed::require(path, package)?;
    }
    relay_testbed::require_container_tools()?;
    Ok(())
}
