//! Service labels: `dev.mirror-baton.<slug>-<hash>`, derived from a project directory.
//!
//! Owns: the label prefix and length bounds, and the stable derivation (FNV-1a, so the
//! same path gets the same label on every run and Rust version). Must never: read the
//! filesystem or the environment.

use std::ffi::OsStr;
use std::path::Path;

/// Every label baton writes starts with this; [`list`](super::install::list) looks for it.
pub const LABEL_PREFIX: &str = "dev.mirror-baton.";

/// launchd labels and systemd unit names both stay well below this.
pub const LABEL_MAX_LEN: usize = 100;

/// The slug part of a derived label is cut to this many characters.
const SLUG_MAX_LEN: usize = 48;

/// The label baton derives for a project directory: `dev.mirror-baton.<slug>-<hash>`.
///
/// The slug is the directory's file name, lower-cased, reduced to `[a-z0-9-]`; the hash is
/// 8 hex digits of a stable (FNV-1a) hash of the whole path, so two projects named `app`
/// in different places get different labels, and the same path gets the same label on
/// every run and every Rust version. Pass the canonical path for a stable result.
pub fn default_label(dir: &Path) -> String {
    let name = dir
        .file_name()
        .unwrap_or_else(|| OsStr::new("root"))
        .to_string_lossy();
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= SLUG_MAX_LEN {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "project" } else { slug };
    let hash = fnv1a_64(dir.as_os_str().as_encoded_bytes());
    let short_hash = (hash >> 32) as u32 ^ hash as u32;
    format!("{LABEL_PREFIX}{slug}-{short_hash:08x}")
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}
