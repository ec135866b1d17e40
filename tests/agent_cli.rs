//! `baton agent` through the real binary, under a temporary HOME: `print` writes nothing
//! and its plist holds every key launchd needs; `install --no-load` writes the file with
//! mode 0644 where launchd looks (list and uninstall: tests/agent.rs). Nothing here calls
//! launchctl or systemctl.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn baton(home: &std::path::Path) -> Command {
    let mut command = Command::new(BATON);
    command
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env(
            "TELEGRAM_BOT_TOKEN",
            "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .env_remove("BATON_SYNC_DIR");
    command
}

#[test]
fn print_shows_a_complete_plist_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let output = baton(home.path())
        .args(["agent", "print", "--manager", "launchd"])
        .arg(project.path())
        .args(["--", "bunx", "opencode-telegram-mirror"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plist = plist::Value::from_reader_xml(&output.stdout[..]).expect("a plist");
    let dict = plist.as_dictionary().expect("a dictionary");
    for key in [
        "Label",
        "ProgramArguments",
        "WorkingDirectory",
        "EnvironmentVariables",
        "RunAtLoad",
        "KeepAlive",
        "ThrottleInterval",
        "ProcessType",
        "ExitTimeOut",
        "StandardOutPath",
        "StandardErrorPath",
    ] {
        assert!(dict.contains_key(key), "missing {key}");
    }
    let arguments: Vec<&str> = dict["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_string())
        .collect();
    assert_eq!(arguments[1], "run");
    assert_eq!(
        &arguments[arguments.len() - 3..],
        ["--", "bunx", "opencode-telegram-mirror"]
    );
    let keep_alive = dict["KeepAlive"].as_dictionary().unwrap();
    assert_eq!(keep_alive["SuccessfulExit"].as_boolean(), Some(false));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains("AAAAAAAAAAAAAAAA"),
        "the token never reaches the agent"
    );
    assert_eq!(
        std::fs::read_dir(home.path()).unwrap().count(),
        0,
        "print writes nothing"
    );
}

#[test]
fn install_no_load_writes_0644_where_launchd_looks() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let output = baton(home.path())
        .args(["agent", "install", "--no-load", "--manager", "launchd"])
        .arg(project.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let agents = home.path().join("Library/LaunchAgents");
    let files: Vec<_> = std::fs::read_dir(&agents).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let path = files[0].path();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("dev.mirror-baton.") && name.ends_with(".plist"),
        "{name}"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let contents = std::fs::read_to_string(&path).unwrap();
    assert!(
        !contents.contains("AAAAAAAAAAAAAAAA"),
        "the token never reaches the agent"
    );
    assert!(plist::Value::from_file(&path).is_ok());
}

#[test]
fn install_warns_when_the_telegram_configuration_lives_only_in_this_shell() {
    let install = |home: &std::path::Path, project: &std::path::Path| {
        let output = baton(home)
            .env("TELEGRAM_CHAT_ID", "-1001234567890")
            .args(["agent", "install", "--no-load", "--manager", "launchd"])
            .arg(project)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let said = install(home.path(), project.path());
    assert!(
        said.contains("warning: the Telegram configuration here comes from this shell")
            && said.contains("TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID"),
        "{said}"
    );
    assert!(!said.contains("AAAAAAAAAAAAAAAA"), "never the token itself");

    // With the configuration in the mirror's own file, the service finds it too.
    let config = home.path().join(".config/opencode");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("telegram.json"),
        r#"{"botToken": "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "chatId": -1001234567890}"#,
    )
    .unwrap();
    let project = tempfile::tempdir().unwrap();
    let said = install(home.path(), project.path());
    assert!(!said.contains("warning"), "{said}");
}
