//! The bot token never reaches what baton prints or writes, even when the user pastes it
//! where it does not belong: into `chatId` (file or `TELEGRAM_CHAT_ID`), at start and on a
//! SIGHUP reload, or into the command an agent would run. Each case scans all output
//! (and every generated file) for the token.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use baton_testkit::fake_bot_api::{FakeBotApi, FakeBotConfig};
use common::process::{Folder, wait_for};

/// A token of the real shape (bot id, colon, 35 url-safe characters) with a short bot id.
const TOKEN: &str = "4321:AAE_never-print-me_0123456789abcdefgh";
const PATIENCE: Duration = Duration::from_secs(30);

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "{what} printed the token:\n{text}");
    assert!(
        !text.contains("never-print-me"),
        "{what} printed part of the token:\n{text}"
    );
}

/// Every file under `dir`, read as text, must be free of the token.
fn assert_no_file_holds_the_token(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_no_file_holds_the_token(&path);
        } else if let Ok(bytes) = std::fs::read(&path) {
            assert_clean(
                &path.display().to_string(),
                &String::from_utf8_lossy(&bytes),
            );
        }
    }
}

fn run_to_exit(folder: &Folder, mut command: std::process::Command) -> Output {
    let project = folder.project("p");
    command
        .arg("run")
        .arg(&project)
        .output()
        .expect("baton runs")
}

#[test]
fn a_token_pasted_into_chat_id_is_not_quoted_by_the_configuration_error() {
    // In the project's file.
    let folder = Folder::new(0.05);
    let config = folder.project("p").join(".opencode/telegram.json");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &config,
        format!(r#"{{"botToken": "{TOKEN}", "chatId": "{TOKEN}"}}"#),
    )
    .expect("write");
    let output = run_to_exit(&folder, folder.baton());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("chatId"), "{}", text(&output));
    assert_clean("the file case", &text(&output));

    // In the environment.
    let folder = Folder::new(0.05);
    let mut command = folder.baton();
    command
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_CHAT_ID", TOKEN);
    let output = run_to_exit(&folder, command);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("TELEGRAM_CHAT_ID"),
        "{}",
        text(&output)
    );
    assert_clean("the environment case", &text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_pasted_into_chat_id_before_a_sighup_stays_out_of_the_log() {
    let fake = FakeBotApi::start_with(FakeBotConfig {
        token: TOKEN.to_owned(),
        ..FakeBotConfig::default()
    })
    .await
    .expect("fake Bot API");
    let folder = Folder::new(0.05);
    let config = folder.project("p").join(".opencode/telegram.json");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
    std::fs::write(&config, r#"{"chatId": -1001}"#).expect("write");
    let mut command = folder.baton();
    command
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_API_URL", fake.api_url());
    let device = folder.start_with("p", &[], command);
    wait_for(PATIENCE, || device.log().contains("starting").then_some(())).expect("baton starts");
    std::fs::write(&config, format!(r#"{{"chatId": "{TOKEN}"}}"#)).expect("rewrite");
    device.signal(libc::SIGHUP);
    wait_for(PATIENCE, || {
        device
            .log()
            .contains("the configuration no longer reads")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the reload is refused:\n{}", device.log()));
    assert_clean("the SIGHUP reload", &device.log());
    drop(device);
    assert_no_file_holds_the_token(&folder.sync_dir());
    assert_no_file_holds_the_token(&folder.state_dir());
}

fn agent(home: &Path, project: &Path, verb: &str, token_env: &str, args: &[&str]) -> Output {
    std::process::Command::new(common::process::BATON)
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("TELEGRAM_BOT_TOKEN", token_env)
        .env_remove("BATON_SYNC_DIR")
        .args(["agent", verb, "--no-load", "--manager", "systemd"])
        .arg(project)
        .arg("--")
        .args(args)
        .output()
        .expect("baton agent runs")
}

#[test]
fn an_agent_whose_command_holds_the_token_is_refused_and_never_written() {
    let home = tempfile::tempdir().expect("home");
    let project = tempfile::tempdir().expect("project");
    // The real shape, short bot id; and the configured token even when it has no such
    // shape (a test token, a self-hosted server's).
    let odd_token = "777:short-never-print-me";
    let equals = format!("--token={TOKEN}");
    let cases: [(&str, &str, [&str; 3]); 3] = [
        ("print", TOKEN, ["mirror", "--token", TOKEN]),
        ("install", TOKEN, ["mirror", "--verbose", &equals]),
        ("install", odd_token, ["mirror", "--token", odd_token]),
    ];
    for (verb, token_env, args) in cases {
        let output = agent(home.path(), project.path(), verb, token_env, &args);
        let said = text(&output);
        assert!(
            !output.status.success(),
            "agent {verb} {args:?} must be refused:\n{said}"
        );
        assert!(said.contains("token"), "a clear error:\n{said}");
        assert_clean(&format!("agent {verb}"), &said);
        assert!(!said.contains(odd_token), "{said}");
        assert_no_file_holds_the_token(home.path());
        let units = home.path().join(".config/systemd/user");
        let written = std::fs::read_dir(&units).map_or(0, |d| d.count());
        assert_eq!(written, 0, "agent {verb} wrote a unit");
    }
}
