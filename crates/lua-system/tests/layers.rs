//! The library's layers, as docs/design.md draws them, held against the code: every `crate::`
//! path a file uses points to its own folder or to a folder below; the files of one folder do
//! not import each other in a circle; and the design's tree names every file of `src/`.
//!
//! Comments are not read (a doc link to `crate::SystemLua` is no import).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first: a file may use its own layer and those before it.
const LAYERS: &[&[&str]] = &[
    &["text", "faults", "address_hash", "heap_profile"],
    &["accounts"],
    &["ffi"],
    &["process"],
    &["state"],
    &["figures"],
    &["functions"],
    &["host"],
    &["export"],
    &["lib"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `src/`, as paths relative to it.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &src(), &mut out);
    out.sort();
    out
}

/// The top-level module a file belongs to (`ffi`, `text`, `lib`).
fn top_module(file: &Path) -> String {
    let first = file.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("`{module}` is in no layer: add it to LAYERS here and to docs/design.md's tree"))
}

/// The file's code without comments (line comments and doc comments; string contents are
/// kept, which is harmless: no string here spells `crate::`).
fn code(file: &Path) -> String {
    let text = fs::read_to_string(src().join(file)).unwrap();
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Each `prefix` path in `code`, as its segments (`crate::ffi::states::record` gives
/// `["ffi", "states", "record"]`), `{a, b}` groups expanded one level.
fn paths(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (start, _) in code.match_indices(prefix) {
        if code[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[start + prefix.len()..];
        let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let segments: Vec<String> = head.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let after = &rest[head.len()..];
        if after.starts_with('{') {
            let group = &after[1..after.find('}').unwrap_or(after.len())];
            for item in group.split(',') {
                let item = item.trim().split("::").next().unwrap_or("").trim().to_owned();
                if !item.is_empty() {
                    let mut path = segments.clone();
                    path.push(item);
                    found.push(path);
                }
            }
        } else if !segments.is_empty() {
            found.push(segments);
        }
    }
    found
}

#[test]
fn every_import_points_to_the_files_own_layer_or_below() {
    let mut upward = Vec::new();
    for file in sources() {
        let own = top_module(&file);
        for path in paths(&code(&file), "crate::") {
            let used = &path[0];
            // The crate root's re-exports (`crate::Text`) and macros are the leaves' or the API's:
            // only module paths are layered.
            if !LAYERS.iter().any(|layer| layer.contains(&used.as_str())) {
                continue;
            }
            if rank(used) > rank(&own) {
                upward.push(format!("{} uses crate::{}", file.display(), path.join("::")));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a higher layer:\n{}", upward.join("\n"));
}

#[test]
fn no_folder_has_a_circle_of_imports() {
    // Edges between the files of one folder (`mod.rs`, which declares them, left out).
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let files = sources();
    let sibling = |dir: &Path, name: &str| -> Option<PathBuf> {
        [dir.join(format!("{name}.rs")), dir.join(name).join("mod.rs")].into_iter().find(|f| files.contains(f))
    };
    for file in &files {
        let Some(dir) = file.parent() else { continue };
        if file.file_name().is_some_and(|n| n == "mod.rs") || dir.as_os_str().is_empty() {
            continue;
        }
        let code = code(file);
        let mut targets = BTreeSet::new();
        for path in paths(&code, "super::") {
            targets.extend(sibling(dir, &path[0]));
        }
        let folder = dir.to_string_lossy().replace('/', "::");
        for path in paths(&code, &format!("crate::{folder}::")) {
            targets.extend(sibling(dir, &path[0]));
        }
        targets.retain(|t| t != file && t.file_name().is_some_and(|n| n != "mod.rs"));
        edges.insert(file.clone(), targets);
    }
    // Depth-first search for a back edge.
    fn visit(
        file: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(at) = stack.iter().position(|f| f == file) {
            let mut circle = stack[at..].to_vec();
            circle.push(file.clone());
            return Some(circle);
        }
        if !done.insert(file.clone()) {
            return None;
        }
        stack.push(file.clone());
        for next in edges.get(file).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for file in edges.keys() {
        if let Some(circle) = visit(file, &edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = circle.iter().map(|f| f.display().to_string()).collect();
            panic!("a circle of imports: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_design_tree_names_every_file_of_the_library() {
    let design = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/design.md")).unwrap();
    let tree = design.split("```").nth(1).expect("docs/design.md opens with the tree");
    let library = &tree[..tree.find("crates/lua-system-cli/").unwrap_or(tree.len())];
    let mut missing = Vec::new();
    for file in sources() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let folder = file.parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let folder_named = folder.is_empty() || library.contains(&format!("{folder}/"));
        // A folder's files are named in its part of the tree, or the folder's line lists them.
        if !folder_named || !library.contains(name.trim_end_matches(".rs")) {
            missing.push(file.display().to_string());
        }
    }
    assert!(missing.is_empty(), "docs/design.md's tree does not name: {}", missing.join(", "));
    // And every folder it names exists.
    for line in library.lines().skip(1) {
        let word = line.split_whitespace().next().unwrap_or("");
        if word.ends_with('/') && line.starts_with("  ") && !line.starts_with("    ") {
            assert!(src().join(word).is_dir(), "docs/design.md names {word}, which is not a folder of src/");
        }
    }
}
