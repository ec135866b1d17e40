//! A Telegram configuration file that is not a regular file, or is absurdly large, is an
//! exit 2 that names the path — `baton run` never hangs opening a FIFO (a blocking open
//! for reading waits for a writer forever) and never reads a huge file into memory.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{Device, Folder};

/// How long `baton run` may take to refuse; only a hang ever waits this long.
const PATIENCE: Duration = Duration::from_secs(30);

fn refuses(folder: &Folder, name: &str, path: &Path) {
    let mut device: Device = folder.start(name, &[]);
    let code = device.wait_exit(PATIENCE);
    let log = device.log();
    assert_eq!(
        code,
        Some(2),
        "baton run must exit 2 naming {} (it hung or went on):\n{log}",
        path.display()
    );
    assert!(log.contains(&path.display().to_string()), "{log}");
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
    let result = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(result, 0, "mkfifo {}", path.display());
}

#[test]
fn a_fifo_as_the_home_configuration_is_refused_not_waited_on() {
    let folder = Folder::new(0.05);
    let fifo = folder
        .root
        .path()
        .join("home/.config/opencode/telegram.json");
    mkfifo(&fifo);
    refuses(&folder, "fifo", &fifo);
}

#[test]
fn a_directory_or_a_huge_file_as_the_project_configuration_is_refused() {
    let folder = Folder::new(0.05);
    let project = folder.project("dir");
    let config = project.join(".opencode/telegram.json");
    std::fs::create_dir_all(&config).expect("a directory where the file should be");
    refuses(&folder, "dir", &config);

    let project = folder.project("huge");
    let config = project.join(".opencode/telegram.json");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
    // Valid JSON, padded past any sane size: read whole, it would be accepted.
    let mut text = String::from(r#"{"chatId": -100}"#);
    text.push_str(&" ".repeat(2 * 1024 * 1024));
    std::fs::write(&config, text).expect("write");
    refuses(&folder, "huge", &config);
}
