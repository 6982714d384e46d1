//! The shape of `src/`, kept: files stay small, each layer uses only the
//! layers below it, and no two files import each other, however indirectly.
//!
//! A file's imports are the `crate::`, `super::` and `self::` paths it names,
//! in `use` trees and inline, each resolved to the file that defines the
//! module it reaches. Naming an enclosing module (a child using its parent's
//! items) is how Rust modules work and is not counted as an import here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a file under `src/` may be.
const MAX_LINES: usize = 600;

/// The layers, lowest first; a module may use its own layer and those below.
const LAYERS: &[(&str, u8)] = &[
    ("exposition", 0),
    ("idle", 0),
    ("intern", 0),
    ("lock", 0),
    ("shutdown", 0),
    ("kafka", 1),
    ("sensor", 2),
    ("cluster", 2),
    ("store", 2),
    ("spool", 2),
    ("config", 3),
    ("logging", 4),
    ("pipeline", 4),
    ("console", 5),
    ("gateway", 5),
    ("chaos", 6),
    ("bench", 6),
    ("cli", 7),
];

/// A source file and the module path it defines (`src/kafka/producer/mod.rs` is `kafka::producer`).
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

fn source_files() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&src).unwrap().with_extension("");
                let mut module: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                    module.pop();
                }
                let text = std::fs::read_to_string(&path).expect("read file");
                files.push(SourceFile { path, module, text });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// Every path a `use` tree names, braces expanded: `a::{b, c::d}` -> `a::b`, `a::c::d`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use(p).into_iter().map(|s| format!("{prefix}{s}")))
        .collect()
}

/// The paths into this crate a file names, as absolute module paths.
fn named_paths(file: &SourceFile, files: &[SourceFile]) -> Vec<Vec<String>> {
    let children = |module: &[String]| files.iter().any(|f| f.module == module);
    let code: String = file
        .text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    // `use` trees, which may span lines and hold braces.
    for statement in code.split(';') {
        let statement = statement.trim();
        let tree = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
            .or_else(|| statement.strip_prefix("pub(super) use "))
            .or_else(|| statement.strip_prefix("use "))
            .or_else(|| statement.rsplit_once("\nuse ").map(|(_, t)| t));
        if let Some(tree) = tree {
            paths.extend(expand_use(tree));
        }
    }
    // Inline paths such as `crate::kafka::admin::random_kafka_uuid()`.
    let bytes = code.as_bytes();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let begin = from + at;
            let boundary = begin == 0
                || !(bytes[begin - 1].is_ascii_alphanumeric()
                    || bytes[begin - 1] == b'_'
                    || bytes[begin - 1] == b':');
            let end = code[begin..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |n| begin + n);
            if boundary {
                paths.push(code[begin..end].trim_end_matches(':').to_string());
            }
            from = end.max(begin + root.len());
        }
    }
    paths
        .into_iter()
        .filter_map(|path| absolute(&file.module, &path, children))
        .collect()
}

/// `path` as seen from `module` made absolute: `crate::`, `super::` and
/// `self::` paths, and paths into a child module (`children` says which
/// modules exist); `None` for paths into other crates.
fn absolute(
    module: &[String],
    path: &str,
    exists: impl Fn(&[String]) -> bool,
) -> Option<Vec<String>> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segments.first() {
        Some(&"crate") => {
            segments.remove(0);
            Vec::new()
        }
        Some(&"super") | Some(&"self") => {
            let mut base = module.to_vec();
            while let Some(&first) = segments.first() {
                match first {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                segments.remove(0);
            }
            base
        }
        Some(first) => {
            let mut child = module.to_vec();
            child.push(first.to_string());
            if !exists(&child) {
                return None;
            }
            module.to_vec()
        }
        None => return None,
    };
    base.extend(segments.iter().map(|s| s.to_string()));
    Some(base)
}

/// The file that defines the deepest module `path` reaches.
fn defining_file<'a>(files: &'a [SourceFile], path: &[String]) -> Option<&'a SourceFile> {
    (0..=path.len())
        .rev()
        .find_map(|n| files.iter().find(|f| f.module == path[..n]))
}

fn layer(module: &[String]) -> Option<u8> {
    let top = module.first()?;
    LAYERS
        .iter()
        .find(|(name, _)| name == top)
        .map(|(_, rank)| *rank)
}

#[test]
fn no_file_under_src_is_longer_than_600_lines() {
    let long: Vec<String> = source_files()
        .iter()
        .filter(|f| f.text.lines().count() > MAX_LINES)
        .map(|f| format!("{} ({} lines)", f.path.display(), f.text.lines().count()))
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn every_top_level_module_has_a_layer() {
    for file in source_files() {
        if file.module.is_empty() {
            continue;
        }
        assert!(
            layer(&file.module).is_some(),
            "{} is in no layer: add its module to LAYERS",
            file.path.display()
        );
    }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let files = source_files();
    let mut upward = Vec::new();
    for file in &files {
        let Some(own) = layer(&file.module) else {
            continue;
        };
        for path in named_paths(file, &files) {
            if let Some(used) = layer(&path)
                && used > own
            {
                upward.push(format!("{} uses {}", file.path.display(), path.join("::")));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a higher layer: {upward:#?}"
    );
}

#[test]
fn no_two_files_import_each_other_even_through_others() {
    let files = source_files();
    let mut edges: BTreeMap<&Path, BTreeSet<&Path>> = BTreeMap::new();
    for file in &files {
        for path in named_paths(file, &files) {
            let Some(target) = defining_file(&files, &path) else {
                continue;
            };
            let enclosing = file.module.starts_with(&target.module);
            if !enclosing {
                edges
                    .entry(file.path.as_path())
                    .or_default()
                    .insert(target.path.as_path());
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit<'a>(
        node: &'a Path,
        edges: &BTreeMap<&'a Path, BTreeSet<&'a Path>>,
        state: &mut BTreeMap<&'a Path, bool>,
        stack: &mut Vec<&'a Path>,
    ) -> Option<Vec<&'a Path>> {
        match state.get(node) {
            Some(true) => {
                let start = stack.iter().position(|p| *p == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            Some(false) => return None,
            None => {}
        }
        state.insert(node, true);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, false);
        None
    }
    let mut state = BTreeMap::new();
    for file in &files {
        if let Some(cycle) = visit(&file.path, &edges, &mut state, &mut Vec::new()) {
            let shown: Vec<String> = cycle.iter().map(|p| p.display().to_string()).collect();
            panic!("files import each other: {}", shown.join(" -> "));
        }
    }
}

#[test]
fn the_import_reader_expands_use_trees_and_resolves_super() {
    assert_eq!(
        expand_use("super::{cluster::GroupView, fleet::{A, B}}"),
        [
            "super::cluster::GroupView",
            "super::fleet::A",
            "super::fleet::B"
        ]
    );
    let module = vec!["console".to_string(), "pages".to_string()];
    let none = |_: &[String]| false;
    assert_eq!(
        absolute(&module, "super::views::Overview", none),
        Some(vec!["console".into(), "views".into(), "Overview".into()])
    );
    assert_eq!(absolute(&module, "std::fmt", none), None);
    let console = vec!["console".to_string()];
    let has_views = |m: &[String]| m == ["console", "views"];
    assert_eq!(
        absolute(&console, "views::Overview", has_views),
        Some(vec!["console".into(), "views".into(), "Overview".into()])
    );
}
