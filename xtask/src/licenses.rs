//! `cargo xtask licenses OUT`: the licences of every third-party crate linked into
//! `relay-sync`, written to OUT at package time (`packaging/build-packages.sh` installs it as
//! `/usr/share/doc/relay-sync/THIRD-PARTY-LICENSES` in both packages).
//!
//! The crates are those `cargo metadata` resolves for relay-cli with the features the packages
//! are built with, on this host's platform, following normal dependencies only: build
//! dependencies, dev-dependencies and procedural macros run while compiling and are not in the
//! binary. Each crate's own licence files (LICENSE*, COPYING*, NOTICE*, …) are copied from its
//! source in cargo's registry; identical texts are printed once, under every crate that ships
//! them. A crate that ships no licence file gets the MIT text with its authors when MIT is
//! among its licences; any other such crate stops the build, so that a new dependency cannot
//! ship without its licence.
//!
//! Why not cargo-about: it does the same from the same metadata, but building it took 3.5
//! minutes of CPU (16 minutes of wall clock on the shared CI machine) before it ran once, for
//! every fresh CI machine; this reads `cargo metadata`, which cargo already has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The files a crate's licence texts are in, by the start of their name (upper case).
const LICENCE_FILES: [&str; 6] = [
    "LICENSE",
    "LICENCE",
    "COPYING",
    "NOTICE",
    "UNLICENSE",
    "COPYRIGHT",
];

/// The MIT licence, for a crate that declares it but ships no text; `{holders}` is replaced
/// by its authors.
const MIT: &str = "Copyright (c) {holders}

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the \"Software\"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
";

/// One third-party crate linked into the binary.
#[derive(Debug)]
struct Crate {
    name: String,
    version: String,
    licence: String,
    repository: String,
    /// `(file name, text)` of each licence text.
    texts: Vec<(String, String)>,
}

/// Writes the third-party licences of the binary to `out`.
pub(crate) fn write(root: &Path, out: &Path) -> Result<()> {
    let crates = linked_crates(root)?;
    let text = render(&crates);
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "xtask: the licences of {} crates written to {}",
        crates.len(),
        out.display()
    );
    Ok(())
}

/// The crates relay-cli links, with their licence texts, sorted by name and version.
fn linked_crates(root: &Path) -> Result<Vec<Crate>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            &host()?,
            "--features",
            crate::PACKAGE_FEATURES,
        ])
        .current_dir(root)
        .output()
        .with_context(|| format!("cannot run {cargo} metadata"))?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|package| Some((package["id"].as_str()?, package)))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|node| Some((node["id"].as_str()?, node)))
        .collect();
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: no workspace members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let binary = packages
        .values()
        .find(|package| package["name"] == "relay-cli")
        .and_then(|package| package["id"].as_str())
        .context("cargo metadata: no relay-cli package")?;

    // Normal dependencies, transitively; a procedural macro's own dependencies run in the
    // compiler too, so the walk does not go through one.
    let mut seen = BTreeSet::new();
    let mut stack = vec![binary];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || (id != binary && is_proc_macro(packages[id])) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| kind["kind"].is_null());
            if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                stack.push(pkg);
            }
        }
    }
    let mut crates = Vec::new();
    for id in seen {
        let package = packages[id];
        if members.contains(id) || is_proc_macro(package) {
            continue;
        }
        crates.push(licensed(package)?);
    }
    crates.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(crates)
}

fn is_proc_macro(package: &Value) -> bool {
    package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|target| {
            target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| kind == "proc-macro")
        })
}

/// `package` with its licence texts from its source directory.
fn licensed(package: &Value) -> Result<Crate> {
    let field = |name: &str| package[name].as_str().unwrap_or_default().to_owned();
    let name = field("name");
    let manifest = PathBuf::from(field("manifest_path"));
    let dir = manifest
        .parent()
        .with_context(|| format!("{name}: no source directory"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            path.is_file()
                && LICENCE_FILES
                    .iter()
                    .any(|start| file.to_ascii_uppercase().starts_with(start))
        })
        .collect();
    if let Some(declared) = package["license_file"].as_str() {
        let declared = dir.join(declared);
        if declared.is_file() && !files.contains(&declared) {
            files.push(declared);
        }
    }
    files.sort();
    let mut texts = Vec::new();
    for path in files {
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        texts.push((file, String::from_utf8_lossy(&text).into_owned()));
    }
    let licence = field("license");
    if texts.is_empty() {
        if !licence.split(['/', ' ', '(', ')']).any(|id| id == "MIT") {
            bail!(
                "{name} {} ({licence}) ships no licence file: add its licence text to \
                 xtask/src/licenses.rs before it is linked into relay-sync",
                field("version")
            );
        }
        let holders: Vec<&str> = package["authors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let holders = if holders.is_empty() {
            format!("the {name} authors")
        } else {
            holders.join(", ")
        };
        texts.push((
            "MIT (the crate ships no licence file; the standard text)".to_owned(),
            MIT.replace("{holders}", &holders),
        ));
    }
    Ok(Crate {
        version: field("version"),
        repository: field("repository"),
        name,
        licence,
        texts,
    })
}

/// The host's target triple, as `rustc -vV` says.
fn host() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("cannot run {rustc} -vV"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// The file: a header, the list of crates, then each distinct text once under the crates
/// that ship it.
fn render(crates: &[Crate]) -> String {
    let mut out = String::new();
    let rule = "=".repeat(78);
    let _ = writeln!(
        out,
        "Third-party licences of relay-sync\n\n\
         /usr/bin/relay-sync is statically linked with the {} Rust crates listed below. Each is\n\
         named with its version, the licence it declares (an SPDX expression) and where its\n\
         source is; the licence texts follow, each printed once under every crate that ships it.\n\
         relay-sync's own licence is in /usr/share/doc/relay-sync/copyright.\n",
        crates.len()
    );
    for c in crates {
        let _ = writeln!(
            out,
            "{} {}: {} ({})",
            c.name, c.version, c.licence, c.repository
        );
    }
    let mut by_text: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in crates {
        for (file, text) in &c.texts {
            by_text
                .entry(text.trim())
                .or_default()
                .push(format!("{} {} ({file})", c.name, c.version));
        }
    }
    let mut groups: Vec<(&str, Vec<String>)> = by_text.into_iter().collect();
    groups.sort_by(|a, b| a.1.cmp(&b.1));
    for (text, shipped_by) in groups {
        let _ = writeln!(
            out,
            "\n{rule}\n{}\n{rule}\n\n{text}",
            shipped_by.join(",\n")
        );
    }
    out
}
