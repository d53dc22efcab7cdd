//! The node's modules import each other in one direction (ARCHITECTURE.md,
//! "crates/node"): gRPC handlers → admission → dissemination → driver →
//! execution and ledger, with the shared state and helpers below all of
//! them. This reads the crate's own sources and fails on an import cycle
//! or on a module that reaches back up the pipeline, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module's name: its file under `src/` without `.rs`; a file in a
/// directory module (`telemetry/metrics.rs`) is `telemetry::metrics`.
fn module_name(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [one] => one.clone(),
        [dir, file] if file == "mod" => dir.clone(),
        _ => parts.join("::"),
    }
}

/// The modules `source` names as `crate::x` or `crate::dir::y` outside
/// comments and its test module.
fn imports(source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let Some(first) = segments.first() else {
                continue;
            };
            let nested = segments.get(1).map(|second| format!("{first}::{second}"));
            match nested {
                Some(nested) if modules.contains(&nested) => found.insert(nested),
                _ => found.insert((*first).to_owned()),
            };
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let names: BTreeMap<String, std::path::PathBuf> = files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("under src").to_owned();
            (module_name(&relative), path)
        })
        .filter(|(name, _)| name != "lib")
        .collect();
    let modules: BTreeSet<String> = names.keys().cloned().collect();
    names
        .iter()
        .map(|(name, path)| {
            let source = std::fs::read_to_string(path).expect("readable");
            let mut uses = imports(&source, &modules);
            uses.retain(|used| used != name && modules.contains(used));
            // A directory module's own file re-exports its children.
            if !name.contains("::") {
                uses.retain(|used| !used.starts_with(&format!("{name}::")));
            }
            (name.clone(), uses)
        })
        .collect()
}

/// A cycle through `start`, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn the_node_modules_import_each_other_without_a_cycle() {
    let graph = graph();
    assert!(graph.contains_key("driver") && graph.contains_key("shared"));
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            panic!(
                "the node's modules import in a circle: {}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn no_stage_reaches_back_up_the_pipeline() {
    let graph = graph();
    // Each stage, and the stages above it, which it must not import.
    let above = |stages: &[&str]| stages.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let handlers = above(&[
        "service",
        "blob_service",
        "identity",
        "approval",
        "directory",
        "queries",
        "events",
    ]);
    let rules = [
        ("admission", handlers.clone()),
        (
            "dissemination",
            [handlers.clone(), above(&["admission"])].concat(),
        ),
        (
            "driver",
            [
                handlers.clone(),
                above(&["admission", "dissemination", "sync"]),
            ]
            .concat(),
        ),
        (
            "shared",
            [
                handlers,
                above(&["admission", "dissemination", "sync", "driver", "readiness"]),
            ]
            .concat(),
        ),
    ];
    for (stage, forbidden) in rules {
        let uses = &graph[stage];
        for module in forbidden {
            assert!(
                !uses.contains(&module),
                "{stage} imports {module}, which lies upstream of it"
            );
        }
    }
    // The check sees imports at all.
    assert!(graph["driver"].contains("shared"), "{:?}", graph["driver"]);
}
