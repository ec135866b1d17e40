//! No module of any crate of ours depends on itself through others: within a crate, the
//! module graph has no cycle. Between crates the compiler holds the arrows (cargo refuses
//! a cycle); inside a crate nothing does, so this test reads the sources.
//!
//! A module is a file (`a.rs` or `a/mod.rs` is `a`, `a/b.rs` is `a::b`; `lib.rs` is the
//! crate's root). It depends on every module it names in code: `crate::a::b::…`,
//! `super::…`, or, in a `use` at its top, a child by its bare name. Each path counts
//! for the longest module it starts with. Comments and the unit tests at the end of a
//! file (from `#[cfg(test)]` on) are not read: a test may look anywhere.
//!
//! `BATON_PRINT_MODULE_GRAPH=1 cargo test --test module_cycles -- --nocapture` prints
//! every crate's edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library crates of the workspace, by their source folder.
const CRATES: &[&str] = &[
    "src",
    "crates/core/src",
    "crates/sim/src",
    "crates/testkit/src",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Parents whose children may name them back, each with its reason; every other
/// parent ↔ child pair counts as a cycle. Kept to what a tool forces on us.
///
/// - The core's `machine`: statig generates the `State` enum (and its constructors) in
///   the module that holds the `#[state_machine]` chart, and every state's handler, in
///   its own file, returns a `State`. The children name nothing but their parent and
///   modules outside `machine`: no two states' files name each other.
const CHILDREN_MAY_NAME: &[(&str, &str)] = &[("crates/core/src", "machine")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` → `a::b`, `a/mod.rs` → `a`, `lib.rs` → `` (the root); `main.rs` is a crate
/// of its own and is not read.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).expect("under its root");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    match last.as_str() {
        "main.rs" if parts.is_empty() => return None,
        "lib.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    Some(parts.join("::"))
}

/// The code of a file: comments removed, unit tests cut off.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            // A `//` inside a string (a URL) is rare in paths we care about; cutting
            // there only loses the rest of that line.
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_owned())
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}::{rest}"),
    }
}

/// The longest known module `path` starts with.
fn resolve(path: &str, modules: &BTreeSet<String>) -> String {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    for length in (1..=segments.len()).rev() {
        let candidate = segments[..length].join("::");
        if modules.contains(&candidate) {
            return candidate;
        }
    }
    String::new()
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths (`a::b`, `a::c::d`, …).
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.trim_end_matches("::*").to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|part| !part.trim().is_empty())
        .flat_map(expand_use_tree)
        .map(|path| match path.as_str() {
            "self" => prefix.to_owned(),
            _ => join(prefix, &path),
        })
        .collect()
}

/// Every path the module names, made absolute (`crate::` dropped).
fn named_paths(module: &str, code: &str) -> Vec<String> {
    // `super` of `a::b` is `a`, whether b is `a/b.rs` or `a/b/mod.rs`.
    let absolute = |path: &str| -> Option<String> {
        let mut base = module.to_owned();
        let mut rest = path;
        if let Some(tail) = rest.strip_prefix("crate::") {
            return Some(tail.to_owned());
        }
        let mut climbed = false;
        while let Some(tail) = rest.strip_prefix("super::") {
            base = parent(&base);
            rest = tail;
            climbed = true;
        }
        if climbed {
            return Some(join(&base, rest));
        }
        rest.strip_prefix("self::").map(|tail| join(module, tail))
    };
    let mut paths = Vec::new();
    // `use` statements (a line that starts one), possibly over several lines.
    let lines: Vec<&str> = code.lines().collect();
    let mut line = 0;
    while line < lines.len() {
        let text = lines[line].trim_start();
        let statement = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|start| text.strip_prefix(start));
        let Some(first) = statement else {
            line += 1;
            continue;
        };
        let mut tree = first.to_owned();
        while !tree.contains(';') && line + 1 < lines.len() {
            line += 1;
            tree.push(' ');
            tree.push_str(lines[line].trim());
        }
        line += 1;
        let tree = tree.split(';').next().unwrap_or_default();
        let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
        for path in expand_use_tree(&tree) {
            match absolute(&path) {
                Some(path) => paths.push(path),
                // A bare first segment: a child module, or another crate.
                None => paths.push(format!("\u{0}{path}")),
            }
        }
    }
    // Paths in expressions and types: `crate::a::b`, `super::a`.
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                && let Some(path) = absolute(tail[..end].trim_end_matches(':'))
            {
                paths.push(path);
            }
            rest = &tail[start.len()..];
        }
    }
    paths
}

fn crate_graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .filter_map(|file| {
            let module = module_of(root, file)?;
            let text = std::fs::read_to_string(file).expect("readable");
            Some((module, code_of(&text)))
        })
        .collect();
    let modules: BTreeSet<String> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, code) in &sources {
        let edges = graph.entry(module.clone()).or_default();
        // A child named by a bare path in code (`fleet::Fleet`), not only in a `use`.
        for child in modules
            .iter()
            .filter(|m| !m.is_empty() && parent(m) == *module)
        {
            let name = child.rsplit("::").next().unwrap_or(child);
            let needle = format!("{name}::");
            let named = code.match_indices(&needle).any(|(at, _)| {
                !code[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if named {
                edges.insert(child.clone());
            }
        }
        for path in named_paths(module, code) {
            let target = match path.strip_prefix('\u{0}') {
                Some(bare) => {
                    let child = join(module, bare);
                    if !modules.contains(&resolve(&child, &modules))
                        || resolve(&child, &modules) == *module
                    {
                        continue;
                    }
                    resolve(&child, &modules)
                }
                None => resolve(&path, &modules),
            };
            let allowed_back_edge = CHILDREN_MAY_NAME.iter().any(|(src, parent_module)| {
                root.ends_with(src) && target == *parent_module && parent(module) == target
            });
            if target != *module && !allowed_back_edge {
                edges.insert(target);
            }
        }
    }
    graph
}

/// Tarjan's strongly connected components with more than one module.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        let graph = state.graph;
        for next in graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.to_owned());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn no_crate_of_ours_has_a_module_cycle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let print = std::env::var_os("BATON_PRINT_MODULE_GRAPH").is_some();
    let mut offences = Vec::new();
    for source in CRATES {
        let graph = crate_graph(&workspace.join(source));
        assert!(graph.len() >= 2, "{source}: found its modules");
        if print {
            println!("== {source}");
            for (module, edges) in &graph {
                let name = if module.is_empty() { "(root)" } else { module };
                let edges: Vec<&str> = edges
                    .iter()
                    .map(|e| if e.is_empty() { "(root)" } else { e.as_str() })
                    .collect();
                println!("{name} -> {}", edges.join(", "));
            }
        }
        for cycle in cycles(&graph) {
            offences.push(format!("{source}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(
        offences.is_empty(),
        "module cycles (each line: modules that reach each other):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_reader_sees_a_cycle_when_there_is_one() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    let paths = named_paths(
        "x::y",
        "use crate::a::{b, c::{d, E}};\nuse super::z::W;\nfn f() { crate::q::r(); }\n",
    );
    assert!(paths.contains(&"a::b".to_string()), "{paths:?}");
    assert!(paths.contains(&"a::c::d".to_string()), "{paths:?}");
    assert!(paths.contains(&"x::z::W".to_string()), "{paths:?}");
    assert!(paths.contains(&"q::r".to_string()), "{paths:?}");
}
