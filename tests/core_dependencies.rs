//! The core crate's dependency tree is the layering the compiler enforces: the core can
//! only name what it depends on. This holds the tree itself to the sans-IO promise, as
//! cargo resolves it for the core alone (`cargo tree -p baton-core -e normal`): its
//! direct dependencies are exactly the allowed ones, and nothing that does IO — an async
//! runtime, a watcher, Telegram, HTTP, the C library, OS entropy — is anywhere below.

use std::collections::BTreeSet;
use std::process::Command;

/// Every direct (normal) dependency the core may have.
const ALLOWED_DIRECT: &[&str] = &[
    "rand",
    "rand_chacha",
    "serde",
    "serde_json",
    "statig",
    "thiserror",
];

/// Crates that must not appear anywhere in the core's tree, and what each would bring.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "the async runtime"),
    ("tokio-util", "the async runtime"),
    ("mio", "OS event loops"),
    ("notify", "the watcher"),
    ("teloxide", "Telegram"),
    ("reqwest", "the network"),
    ("hyper", "the network"),
    ("axum", "the network"),
    ("libc", "the C library (clocks, files, processes)"),
    ("getrandom", "OS randomness"),
    ("mirror-baton", "the product (an arrow pointing up)"),
    ("baton-sim", "the simulator (an arrow pointing up)"),
    ("baton-testkit", "the test kit"),
];

fn core_tree(depth: Option<u32>) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--locked", "--offline", "-p", "baton-core"])
        .args(["-e", "normal", "--prefix", "depth", "--format", "{p}"]);
    if let Some(depth) = depth {
        command.args(["--depth", &depth.to_string()]);
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `2serde_core v1.0.229` → (2, "serde_core").
fn depth_and_name(line: &str) -> (u32, String) {
    let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
    let depth = digits.parse().expect("a depth prefix");
    let name = line[digits.len()..]
        .split_whitespace()
        .next()
        .expect("a package name")
        .to_owned();
    (depth, name)
}

#[test]
fn the_core_depends_only_on_the_allowed_crates() {
    let direct: BTreeSet<String> = core_tree(Some(1))
        .iter()
        .map(|line| depth_and_name(line))
        .filter(|(depth, _)| *depth == 1)
        .map(|(_, name)| name)
        .collect();
    let allowed: BTreeSet<String> = ALLOWED_DIRECT.iter().map(|s| s.to_string()).collect();
    assert!(
        direct.contains("statig") && direct.contains("serde"),
        "the tree was read: {direct:?}"
    );
    let extra: Vec<_> = direct.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "the core must stay sans-IO; it now depends on {extra:?} as well"
    );
}

#[test]
fn nothing_that_does_io_is_anywhere_in_the_cores_tree() {
    let tree = core_tree(None);
    assert!(tree.len() > 5, "the tree was read: {tree:?}");
    let offences: Vec<String> = tree
        .iter()
        .map(|line| depth_and_name(line))
        .filter_map(|(depth, name)| {
            FORBIDDEN
                .iter()
                .find(|(forbidden, _)| *forbidden == name)
                .map(|(_, what)| format!("{name} (depth {depth}): {what}"))
        })
        .collect();
    assert!(
        offences.is_empty(),
        "the core's dependency tree must hold no IO:\n{}",
        offences.join("\n")
    );
}
