//! `cargo xtask dist`: the release binary, packaged as a .deb and an .rpm in `target/dist/`.
//!
//! The packages are laid out by `packaging/build-packages.sh` (dpkg-deb, dpkg-shlibdeps and
//! rpmbuild, all from Debian's archive: `apt-get install dpkg-dev rpm binutils`), which the
//! end-to-end suite also runs on the debug binary and checks with lintian and rpmlint: the
//! layout that is tested is the layout that ships. The man pages and the shell completions come
//! from the binary itself (`relay-sync man --out-dir DIR`, `relay-sync completions SHELL`),
//! generated from the same clap definition as `--help`; the binary decides which pages exist,
//! so relay-sync.conf(5) ships as soon as `man.rs`'s `config_page` renders it from
//! `relay_ops::config`'s key table.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Builds the release binary and both packages; prints their paths and sizes.
pub(crate) fn run(root: &Path) -> Result<()> {
    for (path, package) in [
        ("/usr/bin/dpkg-deb", "dpkg"),
        ("/usr/bin/dpkg-shlibdeps", "dpkg-dev"),
        ("/usr/bin/rpmbuild", "rpm"),
        ("/usr/bin/strip", "binutils"),
    ] {
        relay_testbed::require(path, package)?;
    }
    crate::cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "relay-cli",
        "--features",
        crate::PACKAGE_FEATURES,
    ])?;
    let out = root.join("target/dist");
    let built = Command::new(root.join("packaging/build-packages.sh"))
        .arg(root.join("target/release/relay-sync"))
        .arg(&out)
        .arg(env!("CARGO_PKG_VERSION"))
        .current_dir(root)
        .output()
        .context("cannot run packaging/build-packages.sh")?;
    if !built.status.success() {
        bail!(
            "packaging/build-packages.sh failed ({}): {}",
            built.status,
            String::from_utf8_lossy(&built.stderr)
        );
    }
    for package in String::from_utf8_lossy(&built.stdout).lines() {
        let size = std::fs::metadata(package)
            .with_context(|| format!("cannot read {package}"))?
            .len();
        println!("{package} ({:.1} MB)", size as f64 / 1_000_000.0);
    }
    Ok(())
}
