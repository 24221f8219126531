//! `cargo xtask dist`: the release binary, packaged as a .deb and an .rpm in `target/dist/`.
//!
//! The packages are laid out by `packaging/build-packages.sh` (dpkg-deb and rpmbuild, both from
//! Debian's archive: `apt-get install dpkg rpm`), which the end-to-end suite also runs on the
//! debug binary: the layout that is tested is the layout that ships. The man page and the shell
//! completions come from the binary itself (`relay-sync man`, `relay-sync completions SHELL`),
//! generated from the same clap definition as `--help`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Builds the release binary and both packages; prints their paths.
pub(crate) fn run(root: &Path) -> Result<()> {
    for (path, package) in [("/usr/bin/dpkg-deb", "dpkg"), ("/usr/bin/rpmbuild", "rpm")] {
        relay_testbed::require(path, package)?;
    }
    crate::cargo(&["build", "--release", "--locked", "-p", "relay-cli"])?;
    let out = root.join("target/dist");
    let status = Command::new(root.join("packaging/build-packages.sh"))
        .arg(root.join("target/release/relay-sync"))
        .arg(&out)
        .arg(env!("CARGO_PKG_VERSION"))
        .current_dir(root)
        .status()
        .context("cannot run packaging/build-packages.sh")?;
    if !status.success() {
        bail!("packaging/build-packages.sh failed ({status})");
    }
    Ok(())
}
