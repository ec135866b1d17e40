//! Configuration like the mirror's: home file, project file, environment, then flags;
//! malformed values are errors that name the file (or variable) and key, never the token.

use std::collections::HashMap;
use std::path::Path;

use mirror_baton::adapters::telegram_config::{
    ConfigError, ConfigSources, Secret, TelegramOverrides, load_telegram_config,
};

const HOME_TOKEN: &str = "111:home-token_AAAAAAAAAAAA";
const PROJECT_TOKEN: &str = "222:project-token_BBBBBBBB";
const ENV_TOKEN: &str = "333:env-token_CCCCCCCCCCCCC";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

struct Dirs {
    _root: tempfile::TempDir,
    home: std::path::PathBuf,
    project: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().expect("temp dir");
    let home = root.path().join("home");
    let project = root.path().join("project");
    std::fs::create_dir_all(&project).expect("mkdir");
    Dirs {
        _root: root,
        home,
        project,
    }
}

fn load(
    dirs: &Dirs,
    env: &[(&str, &str)],
    overrides: TelegramOverrides,
) -> Result<mirror_baton::adapters::telegram_config::TelegramConfig, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_telegram_config(&ConfigSources {
        home_dir: Some(&dirs.home),
        project_dir: &dirs.project,
        env: &env,
        overrides,
    })
}

#[test]
fn later_sources_win_key_by_key() {
    let dirs = dirs();
    write(
        &dirs.home.join(".config/opencode/telegram.json"),
        &format!(
            r#"{{"botToken":"{HOME_TOKEN}","chatId":-100,"threadId":5,"updatesUrl":"ignored"}}"#
        ),
    );
    let home_only =
        load(&dirs, &[], TelegramOverrides::default()).expect("home file alone is enough");
    assert_eq!(
        (
            home_only.bot_token.expose(),
            home_only.chat_id,
            home_only.thread_id
        ),
        (HOME_TOKEN, -100, Some(5))
    );

    write(
        &dirs.project.join(".opencode/telegram.json"),
        &format!(r#"{{"botToken":"{PROJECT_TOKEN}","chatId":"-200"}}"#),
    );
    let project = load(&dirs, &[], TelegramOverrides::default()).expect("loads");
    assert_eq!(
        (
            project.bot_token.expose(),
            project.chat_id,
            project.thread_id
        ),
        (PROJECT_TOKEN, -200, Some(5))
    );

    let env = [
        ("TELEGRAM_BOT_TOKEN", ENV_TOKEN),
        ("TELEGRAM_THREAD_ID", "8"),
        ("TELEGRAM_CHAT_ID", ""),
        ("TELEGRAM_API_URL", "http://127.0.0.1:9/"),
    ];
    let with_env = load(&dirs, &env, TelegramOverrides::default()).expect("loads");
    assert_eq!(
        (
            with_env.bot_token.expose(),
            with_env.chat_id,
            with_env.thread_id
        ),
        (ENV_TOKEN, -200, Some(8)),
        "empty env counts as unset"
    );
    assert_eq!(
        with_env.api_url.map(|u| u.to_string()),
        Some("http://127.0.0.1:9/".to_owned())
    );

    let flags = TelegramOverrides {
        chat_id: Some(-300),
        thread_id: Some(9),
        ..Default::default()
    };
    let with_flags = load(&dirs, &env, flags).expect("loads");
    assert_eq!(
        (
            with_flags.bot_token.expose(),
            with_flags.chat_id,
            with_flags.thread_id
        ),
        (ENV_TOKEN, -300, Some(9))
    );
    assert!(
        !format!("{with_flags:?}").contains(ENV_TOKEN),
        "Debug hides the token"
    );
}

#[test]
fn malformed_values_name_their_source_and_key_but_not_the_token() {
    let dirs = dirs();
    let project_file = dirs.project.join(".opencode/telegram.json");
    write(
        &project_file,
        r#"{"botToken":"no-colon-secret-value","chatId":1}"#,
    );
    let error = load(&dirs, &[], TelegramOverrides::default())
        .expect_err("a bad token is refused")
        .to_string();
    assert!(
        error.contains(&project_file.display().to_string()) && error.contains("botToken"),
        "{error}"
    );
    assert!(!error.contains("no-colon-secret-value"), "{error}");

    write(&project_file, r#"{"chatId": 1.5}"#);
    let error = load(&dirs, &[], TelegramOverrides::default())
        .expect_err("refused")
        .to_string();
    assert!(error.contains("chatId"), "{error}");

    write(&project_file, "{not json");
    let error = load(&dirs, &[], TelegramOverrides::default())
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains(&project_file.display().to_string()),
        "{error}"
    );

    std::fs::remove_file(&project_file).expect("rm");
    let error = load(
        &dirs,
        &[
            ("TELEGRAM_BOT_TOKEN", ENV_TOKEN),
            ("TELEGRAM_CHAT_ID", "12x"),
        ],
        TelegramOverrides::default(),
    )
    .expect_err("refused")
    .to_string();
    assert!(
        error.contains("TELEGRAM_CHAT_ID") && error.contains("chatId"),
        "{error}"
    );
    let error = load(
        &dirs,
        &[
            ("TELEGRAM_BOT_TOKEN", ENV_TOKEN),
            ("TELEGRAM_CHAT_ID", "1"),
            ("TELEGRAM_THREAD_ID", "0"),
        ],
        TelegramOverrides::default(),
    )
    .expect_err("refused")
    .to_string();
    assert!(error.contains("TELEGRAM_THREAD_ID"), "{error}");

    let error = load(
        &dirs,
        &[("TELEGRAM_CHAT_ID", "1")],
        TelegramOverrides::default(),
    )
    .expect_err("no token")
    .to_string();
    assert!(error.contains("botToken"), "{error}");
    let ok = load(
        &dirs,
        &[("TELEGRAM_CHAT_ID", "1")],
        TelegramOverrides {
            bot_token: Some(Secret::new(ENV_TOKEN)),
            ..Default::default()
        },
    );
    assert!(ok.is_ok(), "a flag alone supplies the token");
}
