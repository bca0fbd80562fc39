//! The crate's layering (the crate doc of `src/lib.rs`) as a test: every top-level
//! module of `src/` sits in a layer, and imports (`use crate::…` and `crate::…`
//! paths outside `#[cfg(test)]` modules) only reach its own layer or earlier ones.
//! `telemetry` is the side layer every layer emits into: it imports data types
//! only (layers up to `config`). A new module must be placed here to pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, first to last, as the crate doc lists them.
const LAYERS: &[&[&str]] = &[
    &[
        "clock",
        "guid",
        "human",
        "spec",
        "secret",
        "net",
        "names",
        "jwt",
        "credential",
        "schedule",
        "reload",
        "store",
        "file",
    ],
    &["outcome", "output"],
    &["probe", "channel", "monitor"],
    &["config"],
    &["runner", "scheduler"],
    &["build"],
    &["alert", "supervise"],
    &["api", "remote"],
    &["agent"],
    &["cmd", "cli", "init", "lab", "demo", "fuzzing"],
];

/// The side layer, and the last layer it may import from.
const TELEMETRY: &str = "telemetry";
const TELEMETRY_SEES_UP_TO: &str = "config";

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `text` without `#[cfg(test)] mod … { … }` blocks and `//` comments.
fn production_code(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ")
            || trimmed.starts_with("pub mod ")
            || trimmed.starts_with("pub(crate) mod ");
        let brace = trimmed.find('{');
        let semi = trimmed.find(';');
        match (is_mod, brace) {
            (true, Some(b)) if semi.is_none_or(|s| s > b) => {
                let start = after.len() - trimmed.len() + b + 1;
                let mut depth = 1;
                let mut end = after.len();
                for (i, c) in after[start..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = start + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// The top-level modules a piece of code names through `crate::`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `use crate::{a::b, c};`: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            found.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                found.insert(name);
            }
        }
        rest = after;
    }
    found
}

/// Top-level module -> the top-level modules its files import.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&file).unwrap());
        let entry = graph.entry(module.clone()).or_default();
        for m in imported_modules(&code) {
            if m != module {
                entry.insert(m);
            }
        }
    }
    graph
}

#[test]
fn every_module_imports_only_its_own_layer_or_earlier_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    let top = layer_of(TELEMETRY_SEES_UP_TO).unwrap();
    let mut problems = Vec::new();
    for (module, imports) in &graph {
        let here = if module == TELEMETRY {
            top
        } else {
            match layer_of(module) {
                Some(l) => l,
                None => {
                    problems.push(format!("{module} is in no layer: place it in LAYERS"));
                    continue;
                }
            }
        };
        for m in imports {
            if m == TELEMETRY && module != TELEMETRY {
                continue;
            }
            match layer_of(m) {
                Some(l) if l <= here => {}
                Some(_) => problems.push(format!("{module} imports {m}, a later layer")),
                // Not a module of a layer: a macro (`crate::println!`) or a module
                // reported above as placed nowhere.
                None => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_parser_sees_grouped_and_inline_paths_and_skips_test_modules() {
    let code = "use crate::{a::B, c, d::{e, f}};\nfn x() { crate::g::h(); }\n\
                // crate::commented\n#[cfg(test)]\nmod tests { use crate::t; }\n";
    let found = imported_modules(&production_code(code));
    let want: BTreeSet<String> = ["a", "c", "d", "g"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, want);
}
