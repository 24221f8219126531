//! The modules of relay-ops depend on each other without a cycle: each can be read, and
//! changed, knowing only the modules below it (`config` knows nothing of `password`, `check`
//! nothing of `json`). A test, since Rust itself allows any two modules of a crate to use each
//! other.
//!
//! The graph is read from the source: every `crate::NAME` path outside comments and outside a
//! file's `#[cfg(test)] mod tests` (tests may use anything), in `use` lines, attributes and code
//! alike, with `crate::{A, B::C}` groups expanded. `NAME` is a top-level module (a file `NAME.rs`
//! and the files under `NAME/` are one module) or a name `lib.rs` re-exports from one (`pub use
//! hold::{Hold, HoldError}` makes `crate::Hold` an edge to `hold`). What `lib.rs` defines
//! itself (the `Gateway` facade, which uses every module) is not a node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → the modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// `text` without its tests and comments.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first name of each path in a `use` group's body (`a, b::{c, d}, e::f` → a, b, e).
fn group_heads(body: &str) -> Vec<String> {
    let (mut depth, mut item, mut heads) = (0, String::new(), Vec::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(std::mem::take(&mut item)),
            _ if depth == 0 => item.push(c),
            _ => {}
        }
    }
    heads.push(item);
    heads
        .iter()
        .filter_map(|item| {
            let head: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!head.is_empty()).then_some(head)
        })
        .collect()
}

/// The first name after each `crate::` in `code` (each of a group's).
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `pub(crate)` and `pub(in crate::config)` are visibility, not a use.
        if code[..at].ends_with("in ") {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(end, _)| end);
            names.extend(group_heads(&group[..end]));
        } else {
            names.extend(group_heads(
                rest.split([';', '(', ' ', ')', '\n', '<', ','])
                    .next()
                    .unwrap_or(""),
            ));
        }
    }
    names
}

/// The modules `lib.rs` declares, and the module each name it re-exports comes from.
fn lib_names(lib: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let lib = code(lib);
    let mut modules = BTreeSet::new();
    let mut exports = BTreeMap::new();
    for statement in lib.split(';') {
        let words: Vec<&str> = statement.split_whitespace().collect();
        match words.as_slice() {
            [.., "mod", name] => {
                modules.insert((*name).to_owned());
            }
            ["pub", "use", ..] => {
                let path = statement
                    .split_once("use")
                    .map_or("", |(_, path)| path)
                    .trim();
                let Some((module, rest)) = path.split_once("::") else {
                    continue;
                };
                let names = rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|name| !["", "self", "as"].contains(name));
                for name in names {
                    exports.insert(name.to_owned(), module.to_owned());
                }
            }
            _ => {}
        }
    }
    (modules, exports)
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The graph of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    let (modules, exports) = lib_names(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if module == "lib" || !modules.contains(&module) {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let uses = graph.entry(module.clone()).or_default();
        for name in crate_paths(&text) {
            let target = if modules.contains(&name) {
                Some(name)
            } else {
                exports.get(&name).cloned()
            };
            if let Some(target) = target.filter(|target| *target != module) {
                uses.insert(target);
            }
        }
    }
    graph
}

/// A cycle of `graph`, as the modules along it (the first again at the end), if it has one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    /// Depth-first from `node`, with `path` the modules on the way to it.
    fn visit<'a>(
        graph: &'a Graph,
        node: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|on| *on == node) {
            let mut found: Vec<String> = path[at..].iter().map(|m| (*m).to_owned()).collect();
            found.push(node.to_owned());
            return Some(found);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The reading sees the modules and their uses: a sync uses the config, a check the
    // password sources, `json` the check report through a re-export's module.
    assert!(graph["sync"].contains("config"), "{graph:?}");
    assert!(graph["check"].contains("password"), "{graph:?}");
    assert!(graph["json"].contains("hold"), "{graph:?}");
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "relay-ops' modules use each other in a cycle: {}; move what they share into a \
             module of its own below both",
            cycle.join(" → ")
        );
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let edges = |pairs: &[(&str, &str)]| -> Graph {
        let mut graph = Graph::new();
        for (from, to) in pairs {
            graph
                .entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
        }
        graph
    };
    let acyclic = [("sync", "config"), ("check", "config"), ("json", "check")];
    assert_eq!(cycle(&edges(&acyclic)), None);
    let cyclic = [acyclic.as_slice(), &[("check", "json")]].concat();
    assert_eq!(
        cycle(&edges(&cyclic)),
        Some(vec![
            "check".to_owned(),
            "json".to_owned(),
            "check".to_owned()
        ])
    );
    assert_eq!(
        crate_paths("use crate::{failures, journal::{self, Journaled}, outbox};\nx = crate::json::sync(r);\npub(in crate::config) fn f()"),
        ["failures", "journal", "outbox", "json"]
    );
    assert_eq!(
        code("a // crate::b\nc\n#[cfg(test)]\nmod tests { crate::d }"),
        "a \nc"
    );
}
