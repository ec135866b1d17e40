//! The one identity builder for tests: `identity("a")` is device `host:/a` with fixed,
//! recognisable fields. A test that needs a field otherwise says so with struct-update
//! syntax (`Identity { pid: 7, ..identity("a") }`), so what it cares about stands out.
//! Pure: never touches a file, a clock or the process.
#![allow(dead_code)] // each test file uses a different subset

use mirror_baton::core::record::Identity;

/// Device `host:/{name}`: project `/{name}`, instance `inst-{name}`, install
/// `install-{name}`, pid 0, no boot id, priority 0, no thread, version `test`.
pub fn identity(name: &str) -> Identity {
    Identity {
        device_id: format!("host:/{name}"),
        hostname: "host".into(),
        project_dir: format!("/{name}"),
        pid: 0,
        instance: format!("inst-{name}"),
        install_id: format!("install-{name}"),
        boot_id: String::new(),
        priority: 0,
        thread_id: None,
        version: "test".into(),
    }
}

/// [`identity`] for a given device id `host:dir` (hostname and project taken from it).
pub fn identity_of(device_id: &str) -> Identity {
    let (host, dir) = device_id.split_once(':').unwrap_or(("host", device_id));
    Identity {
        device_id: device_id.to_string(),
        hostname: host.to_string(),
        project_dir: dir.to_string(),
        ..identity(dir.trim_start_matches('/'))
    }
}
