//! The local (never synced) state directory: the per-install id, the one-process-per-
//! device lock, and the control sockets' folder.
//!
//! Owns: `<state>/install-id` (random, created once per machine: a cloned or migrated
//! Mac brings this file along, so it also names the machine it was made on, and a copy
//! found on another machine is replaced), `<state>/locks/<stem>.lock` (an
//! advisory `flock` held for the life of `baton run`), `<state>/run/` (control sockets).
//! Must never: live inside the sync folder (a synced lock would lock every Mac).

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot use the local state folder {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "another baton (pid {pid}) already runs for {device_id} on this machine; stop it first \
         (kill {pid}), or give this one its own name with --device-name"
    )]
    AlreadyRunning { pid: String, device_id: String },
}

/// The default local state folder: `~/Library/Application Support/mirror-baton` on macOS,
/// `$XDG_STATE_HOME/mirror-baton` (or `~/.local/state/mirror-baton`) elsewhere.
pub fn default_state_dir() -> PathBuf {
    let base = if cfg!(target_os = "macos") {
        dirs::data_dir()
    } else {
        dirs::state_dir().or_else(dirs::data_local_dir)
    };
    base.unwrap_or_else(std::env::temp_dir).join("mirror-baton")
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the per-install id, creating it (16 random bytes, hex) on first use.
///
/// The file holds `<id> <machine>`, where `<machine>` fingerprints this machine's
/// hardware id. Migration Assistant, a disk clone or a restored backup copies the state
/// folder along with the rest of `~/Library`; a file made on another machine is
/// replaced, so the copy gets an install id of its own and its twin is recognised as
/// another install. Without a machine id (unknown OS), the id is kept as found.
pub fn install_id(state_dir: &Path) -> Result<String, LocalError> {
    install_id_on(state_dir, &machine_fingerprint())
}

fn install_id_on(state_dir: &Path, machine: &str) -> Result<String, LocalError> {
    fs::create_dir_all(state_dir).map_err(io_error(state_dir))?;
    let path = state_dir.join("install-id");
    if let Ok(text) = fs::read_to_string(&path) {
        let mut fields = text.split_whitespace();
        let id = fields.next().unwrap_or_default();
        let made_on = fields.next();
        let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        match made_on {
            _ if !valid => {}
            Some(made_on) if !machine.is_empty() && made_on != machine => {
                tracing::info!(
                    path = %path.display(),
                    "this state folder was made on another machine (a clone, a migration, a \
                     restored backup): this machine gets an install id of its own"
                );
            }
            Some(_) => return Ok(id.to_string()),
            None => {
                // Written before machines were recorded: keep the id, note the machine.
                write_install_id(&path, id, machine)?;
                return Ok(id.to_string());
            }
        }
    }
    let id = random_hex(16);
    write_install_id(&path, &id, machine)?;
    Ok(id)
}

fn write_install_id(path: &Path, id: &str, machine: &str) -> Result<(), LocalError> {
    let text = if machine.is_empty() {
        format!("{id}\n")
    } else {
        format!("{id} {machine}\n")
    };
    fs::write(path, text).map_err(io_error(path))
}

/// A fingerprint (FNV-1a, hex) of this machine's hardware id, or empty when unknown.
/// The id itself is not stored.
fn machine_fingerprint() -> String {
    match read_machine_id() {
        Some(id) if !id.trim().is_empty() => format!(
            "{:016x}",
            crate::core::record::stable_hash(id.trim().as_bytes())
        ),
        _ => String::new(),
    }
}

#[cfg(target_os = "linux")]
fn read_machine_id() -> Option<String> {
    fs::read_to_string("/etc/machine-id")
        .or_else(|_| fs::read_to_string("/var/lib/dbus/machine-id"))
        .ok()
}

/// The hardware UUID (`IOPlatformUUID`), which a clone or migration does not carry over.
#[cfg(target_os = "macos")]
fn read_machine_id() -> Option<String> {
    let mut uuid = [0u8; 16];
    let wait = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: gethostuuid writes exactly 16 bytes into `uuid`.
    let result = unsafe { libc::gethostuuid(uuid.as_mut_ptr(), &wait) };
    (result == 0).then(|| uuid.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn read_machine_id() -> Option<String> {
    None
}

/// This boot of this machine, or empty when the OS does not say. Records carry it so a
/// peer probes a pid only when it was written on the same boot of the same machine:
/// hostnames repeat (clones, namesake Macs) and pids repeat across boots.
pub fn boot_id() -> String {
    let id = read_boot_id().unwrap_or_default();
    let id = id.trim();
    // A short, printable token; anything odd counts as unknown.
    if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        id.to_string()
    } else {
        String::new()
    }
}

#[cfg(target_os = "linux")]
fn read_boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()
}

#[cfg(target_os = "macos")]
fn read_boot_id() -> Option<String> {
    let name = c"kern.bootsessionuuid";
    let mut buffer = [0u8; 64];
    let mut len = buffer.len();
    // SAFETY: sysctlbyname writes at most `len` bytes into `buffer` and updates `len`.
    let result = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if result != 0 {
        return None;
    }
    let bytes = &buffer[..len.min(buffer.len())];
    let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn read_boot_id() -> Option<String> {
    None
}

/// Where a refusal of this device (another install writes its record) is remembered
/// between runs: `<state>/refused/<group>/<stem>`, holding that install's id.
pub fn refusal_file(state_dir: &Path, group: &str, stem: &str) -> PathBuf {
    state_dir.join("refused").join(group).join(stem)
}

/// The install id a previous run refused for, if one was remembered (and reads sanely).
pub fn recalled_refusal(file: &Path) -> Option<String> {
    let text = fs::read_to_string(file).ok()?;
    let id = text.trim();
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| id.to_string())
}

/// Remembers (or, with `None`, forgets) the install this device refused for. Failing to
/// is logged, not fatal: the next run then only watches the record again.
pub fn remember_refusal(file: &Path, install_id: Option<&str>) {
    let result = match install_id {
        Some(id) => file
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(file, format!("{id}\n"))),
        None => match fs::remove_file(file) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    if let Err(error) = result {
        tracing::warn!(file = %file.display(), %error, "cannot update the remembered refusal");
    }
}

/// `bytes` random bytes from the OS, as lowercase hex (instance nonces, install ids,
/// gateway credentials).
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Held for the life of the process: one `baton run` per device id per host.
#[derive(Debug)]
pub struct DeviceLock {
    _file: fs::File,
    path: PathBuf,
}

impl DeviceLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock for `stem`, or says which pid holds it.
pub fn lock_device(
    state_dir: &Path,
    stem: &str,
    device_id: &str,
) -> Result<DeviceLock, LocalError> {
    let dir = state_dir.join("locks");
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let path = dir.join(format!("{stem}.lock"));
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    if !try_flock(&file) {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(LocalError::AlreadyRunning {
            pid: if pid.is_empty() {
                "unknown".into()
            } else {
                pid.to_string()
            },
            device_id: device_id.to_string(),
        });
    }
    let write_pid = |file: &mut fs::File| -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write_pid(&mut file).map_err(io_error(&path))?;
    Ok(DeviceLock { _file: file, path })
}

#[cfg(unix)]
fn try_flock(file: &fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, owned descriptor; the lock dies with the descriptor.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_flock(_file: &fs::File) -> bool {
    true
}

/// Whether a process with this pid runs on this host (signal 0 probe).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks existence and permission.
    let result = unsafe { libc::kill(pid as i32, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This device's own database for the mirror (`TELEGRAM_DB_PATH`):
/// `<state>/mirror/<group>/<stem>.db`. Without it every mirror on a machine shares
/// `/tmp/telegram-opencode.db`, its session id and its `since`.
pub fn mirror_db_path(state_dir: &Path, group: &str, stem: &str) -> PathBuf {
    state_dir
        .join("mirror")
        .join(group)
        .join(format!("{stem}.db"))
}

/// The control socket path for a device of a group on this host. Kept short: macOS
/// limits socket paths to 104 bytes.
pub fn control_socket(state_dir: &Path, group: &str, stem: &str) -> PathBuf {
    let group_hash = crate::core::record::stable_hash(group.as_bytes()) as u32;
    let stem_hash = crate::core::record::stable_hash(stem.as_bytes());
    state_dir
        .join("run")
        .join(format!("{group_hash:08x}-{stem_hash:016x}.sock"))
}

/// Every control socket of a group on this host.
pub fn group_sockets(state_dir: &Path, group: &str) -> Vec<PathBuf> {
    let group_hash = crate::core::record::stable_hash(group.as_bytes()) as u32;
    let prefix = format!("{group_hash:08x}-");
    let Ok(entries) = fs::read_dir(state_dir.join("run")) else {
        return Vec::new();
    };
    let mut sockets: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".sock"))
        })
        .collect();
    sockets.sort();
    sockets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    fn boot_id_is_known_and_stable_within_a_boot() {
        let id = boot_id();
        assert!(id.len() >= 16, "the OS names this boot: {id:?}");
        assert_eq!(id, boot_id());
    }

    #[test]
    fn an_install_id_copied_from_another_machine_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let here = install_id_on(dir.path(), "aaaa").unwrap();
        assert_eq!(install_id_on(dir.path(), "aaaa").unwrap(), here, "stable");
        // The state folder arrives on another machine (Migration Assistant, a clone).
        let there = install_id_on(dir.path(), "bbbb").unwrap();
        assert_ne!(there, here, "the copy gets its own id");
        assert_eq!(install_id_on(dir.path(), "bbbb").unwrap(), there);
        // A file from before machines were recorded keeps its id and learns the machine.
        let old = "0123456789abcdef0123456789abcdef";
        std::fs::write(dir.path().join("install-id"), format!("{old}\n")).unwrap();
        assert_eq!(install_id_on(dir.path(), "cccc").unwrap(), old);
        assert_eq!(install_id_on(dir.path(), "cccc").unwrap(), old);
        assert_ne!(install_id_on(dir.path(), "dddd").unwrap(), old);
        // Unknown machine: kept as found.
        let kept = install_id_on(dir.path(), "").unwrap();
        assert_eq!(install_id_on(dir.path(), "").unwrap(), kept);
        assert!(!machine_fingerprint().contains(char::is_whitespace));
    }

    #[test]
    fn install_id_is_stable_and_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = install_id(dir.path()).unwrap();
        assert_eq!(first, install_id(dir.path()).unwrap());
        let held = lock_device(dir.path(), "stem", "dev").unwrap();
        let second = lock_device(dir.path(), "stem", "dev").unwrap_err();
        let message = second.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        drop(held);
        lock_device(dir.path(), "stem", "dev").unwrap();
    }

    #[test]
    fn probes_pids() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}
