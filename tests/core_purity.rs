//! The core is sans-IO: nothing in `crates/core/src/` may read a clock, touch the
//! filesystem, the environment, processes, the network or threads, or draw OS randomness.
//! Fixture replay, the simulator and model checking depend on it.
//!
//! The compiler holds the rest: the core crate cannot name tokio, notify, teloxide,
//! reqwest or libc because they are not its dependencies (`tests/core_dependencies.rs`
//! checks its tree). What this scan still catches is the standard library, which every
//! crate can reach, and OS randomness, which `rand`'s features (unified across the
//! workspace, so the product's `thread_rng` is compiled in) would let the core call.

use std::path::Path;

const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "a clock"),
    ("SystemTime", "the wall clock"),
    ("std::time::Instant", "a clock"),
    ("std::fs", "the filesystem"),
    ("std::env", "the environment"),
    ("std::process", "processes"),
    ("std::net", "the network"),
    ("std::thread", "threads"),
    ("thread_rng", "OS randomness"),
    ("rand::rng()", "OS randomness"),
    ("OsRng", "OS randomness"),
    ("from_entropy", "OS randomness"),
    ("from_os_rng", "OS randomness"),
    ("getrandom", "OS randomness"),
    ("rand::random", "OS randomness"),
];

#[test]
fn the_core_reads_no_clock_file_or_os_randomness() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core/src");
    let mut offences = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&core).expect("crates/core/src exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).expect("readable");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (needle, what) in FORBIDDEN {
                if code.contains(needle) {
                    offences.push(format!(
                        "{}:{}: uses {what} ({needle})",
                        path.display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(files >= 6, "found the core's files");
    assert!(
        offences.is_empty(),
        "the core must stay sans-IO:\n{}",
        offences.join("\n")
    );
}
