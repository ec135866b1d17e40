//! `baton agent`: the service files it writes, read back the way launchd and systemd
//! would, under a temporary HOME. No test here runs launchctl or systemctl: every command
//! goes to a `FakeRunner` that records it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mirror_baton::agent::{
    self, AgentEnv, AgentError, AgentSpec, CommandOutput, CommandRunner, InstallRequest,
    ServiceManager, UninstallTarget,
};

const UID: u32 = 501;
const PROGRAM: &str = "/opt/mirror baton/bin/baton";
const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// A temporary HOME plus a project directory inside it.
struct Fixture {
    home: tempfile::TempDir,
    project: PathBuf,
}

impl Fixture {
    fn new(project_name: &str) -> Self {
        let home = tempfile::tempdir().expect("temp dir");
        let project = home.path().join("code").join(project_name);
        std::fs::create_dir_all(&project).expect("create project dir");
        let project = project.canonicalize().expect("canonical project dir");
        Self { home, project }
    }

    fn env(&self, manager: ServiceManager) -> AgentEnv {
        AgentEnv {
            home: self.home.path().to_path_buf(),
            uid: UID,
            manager,
            program: PathBuf::from(PROGRAM),
            path_env: "/opt/homebrew/bin:.:/usr/bin::relative/bin:/bin:/usr/bin".to_owned(),
            cwd: self.home.path().to_path_buf(),
        }
    }

    fn request(&self) -> InstallRequest {
        InstallRequest {
            dir: Some(self.project.clone()),
            child_command: vec!["bunx".to_owned(), "opencode-telegram-mirror".to_owned()],
            ..InstallRequest::default()
        }
    }
}

/// Records every command; answers `launchctl print` (is it loaded?) with `loaded`.
#[derive(Default)]
struct FakeRunner {
    calls: Vec<Vec<String>>,
    loaded: bool,
}

impl CommandRunner for FakeRunner {
    fn run(&mut self, program: &str, args: &[String]) -> Result<CommandOutput, AgentError> {
        let mut call = vec![program.to_owned()];
        call.extend(args.iter().cloned());
        self.calls.push(call);
        if args.first().map(String::as_str) == Some("print") && !self.loaded {
            return Ok(CommandOutput {
                success: false,
                code: Some(113),
                stderr: "Could not find service".to_owned(),
            });
        }
        Ok(CommandOutput::ok())
    }
}

fn call(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn install(fixture: &Fixture, manager: ServiceManager, request: &InstallRequest) -> PathBuf {
    let env = fixture.env(manager);
    let spec = AgentSpec::from_request(&env, request).expect("valid request");
    let mut runner = FakeRunner::default();
    let report = agent::install(&env, &spec, true, &mut runner).expect("install");
    assert!(runner.calls.is_empty(), "--no-load ran {:?}", runner.calls);
    assert!(!report.loaded);
    report.unit_path
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn launchd_plist_holds_every_key_with_mode_0644_under_home() {
    let fixture = Fixture::new("web-app");
    let plist_path = install(&fixture, ServiceManager::Launchd, &fixture.request());

    let label = agent::default_label(&fixture.project);
    let home = fixture.home.path();
    assert_eq!(
        plist_path,
        home.join(format!("Library/LaunchAgents/{label}.plist"))
    );
    assert_eq!(mode(&plist_path), 0o644);

    let value = plist::Value::from_file(&plist_path).expect("written plist parses");
    let dict = value.as_dictionary().expect("top level is a dictionary");
    let string = |key: &str| dict.get(key).and_then(plist::Value::as_string).expect(key);
    let project = fixture.project.to_str().expect("utf-8 temp path");

    assert_eq!(string("Label"), label);
    let arguments: Vec<&str> = dict["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments array")
        .iter()
        .map(|v| v.as_string().expect("string argument"))
        .collect();
    assert_eq!(
        arguments,
        [
            PROGRAM,
            "run",
            project,
            "--",
            "bunx",
            "opencode-telegram-mirror"
        ]
    );
    assert_eq!(string("WorkingDirectory"), project);
    let environment = dict["EnvironmentVariables"]
        .as_dictionary()
        .expect("EnvironmentVariables dictionary");
    assert_eq!(environment.len(), 1, "PATH only: {environment:?}");
    assert_eq!(
        environment["PATH"].as_string(),
        Some("/opt/homebrew/bin:/usr/bin:/bin"),
        "relative, empty and duplicate PATH entries are dropped"
    );
    assert_eq!(dict["RunAtLoad"].as_boolean(), Some(true));
    let keep_alive = dict["KeepAlive"].as_dictionary().expect("KeepAlive dict");
    assert_eq!(keep_alive.len(), 1);
    assert_eq!(keep_alive["SuccessfulExit"].as_boolean(), Some(false));
    assert_eq!(dict["ThrottleInterval"].as_signed_integer(), Some(10));
    assert_eq!(string("ProcessType"), "Background");
    let exit_timeout = dict["ExitTimeOut"]
        .as_signed_integer()
        .expect("ExitTimeOut");
    assert_eq!(exit_timeout, 40);
    assert_eq!(exit_timeout as u64, agent::STOP_TIMEOUT.as_secs());
    let logs = home.join("Library/Logs/mirror-baton");
    assert_eq!(
        Path::new(string("StandardOutPath")),
        logs.join(format!("{label}.out.log"))
    );
    assert_eq!(
        Path::new(string("StandardErrorPath")),
        logs.join(format!("{label}.err.log"))
    );
    assert!(logs.is_dir(), "install creates the log directory");
    assert_eq!(dict.len(), 11, "no keys beyond the listed ones: {dict:?}");
}

#[test]
fn secret_named_variables_never_reach_the_service_file() {
    let fixture = Fixture::new("bot");
    let mut request = fixture.request();
    request.extra_env = vec![
        (
            "TELEGRAM_BOT_TOKEN".to_owned(),
            "not-a-token-shape".to_owned(),
        ),
        ("telegram_token".to_owned(), "x".to_owned()),
        ("MY_SECRET".to_owned(), "x".to_owned()),
        ("DB_PASSWORD".to_owned(), "x".to_owned()),
        ("OPENAI_API_KEY".to_owned(), "x".to_owned()),
        ("TELEGRAM_CHAT_ID".to_owned(), "-100200300".to_owned()),
    ];
    for manager in [ServiceManager::Launchd, ServiceManager::Systemd] {
        let env = fixture.env(manager);
        let spec = AgentSpec::from_request(&env, &request).expect("valid request");
        assert_eq!(
            spec.dropped_env,
            [
                "TELEGRAM_BOT_TOKEN",
                "telegram_token",
                "MY_SECRET",
                "DB_PASSWORD",
                "OPENAI_API_KEY"
            ]
        );
        let expected: BTreeMap<String, String> = [
            ("PATH", "/opt/homebrew/bin:/usr/bin:/bin"),
            ("TELEGRAM_CHAT_ID", "-100200300"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(spec.environment(), expected);

        let path = install(&fixture, manager, &request);
        let text = std::fs::read_to_string(&path).expect("read unit");
        for name in &spec.dropped_env {
            assert!(
                !text.contains(name.as_str()),
                "{name} leaked into {manager:?} file"
            );
        }
        assert!(text.contains("TELEGRAM_CHAT_ID"));
    }
    let plist = plist::Value::from_file(
        fixture
            .env(ServiceManager::Launchd)
            .unit_path(&agent::default_label(&fixture.project)),
    )
    .expect("plist parses");
    let environment = plist.as_dictionary().expect("dict")["EnvironmentVariables"]
        .as_dictionary()
        .expect("env dict")
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(environment, ["PATH", "TELEGRAM_CHAT_ID"]);
}

#[test]
fn a_bot_token_in_an_argument_or_value_is_refused_without_echoing_it() {
    let fixture = Fixture::new("bot");
    let env = fixture.env(ServiceManager::Launchd);

    let mut in_option = fixture.request();
    in_option.run_options = vec![format!("--token={BOT_TOKEN}")];
    let mut in_child = fixture.request();
    in_child.child_command.push(BOT_TOKEN.to_owned());
    let mut in_value = fixture.request();
    in_value.extra_env = vec![("BOT".to_owned(), BOT_TOKEN.to_owned())];

    for request in [in_option, in_child, in_value] {
        let error = AgentSpec::from_request(&env, &request).expect_err("token refused");
        assert!(
            matches!(error, AgentError::SecretInArguments { .. }),
            "{error:?}"
        );
        assert!(!error.to_string().contains(BOT_TOKEN), "{error}");
        assert!(!format!("{error:?}").contains(BOT_TOKEN), "{error:?}");
        assert!(agent::print(&env, &request).is_err());
    }
    assert!(
        !fixture.home.path().join("Library").exists(),
        "nothing written"
    );
}

#[test]
fn labels_are_stable_and_distinct_for_same_named_dirs() {
    let label = agent::default_label(Path::new("/Users/ann/code/My Project!!"));
    assert_eq!(
        label,
        agent::default_label(Path::new("/Users/ann/code/My Project!!"))
    );
    let hash = label
        .strip_prefix("dev.mirror-baton.my-project-")
        .unwrap_or_else(|| panic!("unexpected label {label}"));
    assert_eq!(hash.len(), 8);
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // A fixed value (FNV-1a, checked by hand): the hash must not change between builds
    // or Rust versions, or a reinstall would leave the old agent running under the old label.
    assert_eq!(
        agent::default_label(Path::new("/Users/ann/code/app")),
        "dev.mirror-baton.app-0e6f3452"
    );

    let work = agent::default_label(Path::new("/Users/ann/work/app"));
    let code = agent::default_label(Path::new("/Users/ann/code/app"));
    assert_ne!(work, code);
    assert!(work.starts_with("dev.mirror-baton.app-") && code.starts_with("dev.mirror-baton.app-"));

    let long = agent::default_label(Path::new(&format!("/x/{}", "Ünïcode_Ω-".repeat(40))));
    assert!(long.len() <= agent::LABEL_MAX_LEN, "{long}");
    let slug = &long["dev.mirror-baton.".len()..];
    assert!(
        slug.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    );
    assert!(agent::default_label(Path::new("/!!!")).starts_with("dev.mirror-baton.project-"));
    assert!(agent::default_label(Path::new("/")).starts_with("dev.mirror-baton.root-"));
}

#[test]
fn custom_labels_get_the_prefix_and_bad_ones_are_refused() {
    assert_eq!(
        agent::normalize_label("work").expect("ok"),
        "dev.mirror-baton.work"
    );
    assert_eq!(
        agent::normalize_label("dev.mirror-baton.work").expect("ok"),
        "dev.mirror-baton.work"
    );
    for bad in [
        "",
        "has space",
        "a/b",
        "../up",
        "x".repeat(90).as_str(),
        "dev.mirror-baton.",
    ] {
        let error = agent::normalize_label(bad).expect_err(bad);
        assert!(
            matches!(error, AgentError::InvalidLabel { .. }),
            "{bad:?}: {error:?}"
        );
    }

    let fixture = Fixture::new("app");
    let mut request = fixture.request();
    request.label = Some("laptop-app".to_owned());
    let path = install(&fixture, ServiceManager::Launchd, &request);
    assert!(path.ends_with("Library/LaunchAgents/dev.mirror-baton.laptop-app.plist"));
}

/// Splits a systemd command line the way systemd does for the subset baton writes:
/// whitespace-separated words, double quotes, backslash escapes, `%%` and `$$`.
fn split_systemd_command_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '\\' => word.push(chars.next().expect("escape at end of line")),
                '%' | '$' => {
                    assert_eq!(
                        chars.next(),
                        Some(c),
                        "lone {c} would be expanded by systemd"
                    );
                    word.push(c);
                }
                c if c.is_whitespace() && !quoted => break,
                c => word.push(c),
            }
        }
        assert!(!quoted, "unterminated quote in {line}");
        words.push(word);
    }
}

/// `[section]` → key → values (keys may repeat), failing on any malformed line.
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = None;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let section = section.clone().expect("key before any section");
        sections
            .entry(section)
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    sections
}

#[test]
fn systemd_unit_reads_back_line_by_line_and_quoting_round_trips() {
    let fixture = Fixture::new("100% Project");
    let mut request = fixture.request();
    let tricky = r#"say "hi" to $HOME\n at 100% {now}; done"#;
    request.child_command = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        tricky.to_owned(),
        ";".to_owned(),
    ];
    request.run_options = vec![
        "--sync-dir".to_owned(),
        "/Users/ann/Library/Mobile Documents/x".to_owned(),
    ];
    let path = install(&fixture, ServiceManager::Systemd, &request);

    let label = agent::default_label(&fixture.project);
    let home = fixture.home.path();
    assert_eq!(
        path,
        home.join(format!(".config/systemd/user/{label}.service"))
    );
    assert_eq!(mode(&path), 0o644);

    let unit = parse_unit(&std::fs::read_to_string(&path).expect("read unit"));
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service.get(key).unwrap_or_else(|| panic!("no {key}"));
        assert_eq!(values.len(), 1, "{key} repeated");
        &values[0]
    };
    let project = fixture.project.to_str().expect("utf-8");
    assert_eq!(one("WorkingDirectory").replace("%%", "%"), project);
    assert!(!one("WorkingDirectory").replace("%%", "").contains('%'));
    assert_eq!(
        split_systemd_command_line(one("ExecStart")),
        [
            PROGRAM,
            "run",
            project,
            "--sync-dir",
            "/Users/ann/Library/Mobile Documents/x",
            "--",
            "sh",
            "-c",
            tricky,
            ";"
        ]
    );
    assert_eq!(
        split_systemd_command_line(one("Environment")),
        ["PATH=/opt/homebrew/bin:/usr/bin:/bin"]
    );
    assert_eq!(one("Type"), "simple");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("RestartSec"), "10");
    assert_eq!(one("TimeoutStopSec"), "40");
    assert_eq!(one("RestartPreventExitStatus"), "2 3");
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(one("KillSignal"), "SIGTERM");
    let logs = home.join(".local/state/mirror-baton/logs");
    let log = |suffix: &str| {
        format!(
            "append:{}",
            logs.join(format!("{label}.{suffix}")).display()
        )
    };
    assert_eq!(one("StandardOutput"), log("out.log"));
    assert_eq!(one("StandardError"), log("err.log"));
    assert_eq!(unit["Install"]["WantedBy"], ["default.target"]);
    assert!(unit["Unit"]["Description"][0].contains("mirror-baton"));
}

#[test]
fn loading_runs_the_right_commands_and_only_through_the_runner() {
    let fixture = Fixture::new("app");
    let label = agent::default_label(&fixture.project);
    let target = format!("gui/{UID}/{label}");

    let env = fixture.env(ServiceManager::Launchd);
    let spec = AgentSpec::from_request(&env, &fixture.request()).expect("spec");
    let plist = env.unit_path(&label);
    let plist = plist.to_str().expect("utf-8");
    let mut fresh = FakeRunner::default();
    agent::install(&env, &spec, false, &mut fresh).expect("install");
    assert_eq!(
        fresh.calls,
        [
            call(&["launchctl", "print", &target]),
            call(&["launchctl", "bootstrap", &format!("gui/{UID}"), plist])
        ]
    );
    let mut reinstall = FakeRunner {
        loaded: true,
        ..FakeRunner::default()
    };
    agent::install(&env, &spec, false, &mut reinstall).expect("reinstall");
    assert_eq!(
        reinstall.calls[1],
        call(&["launchctl", "bootout", &target]),
        "already loaded: bootout first"
    );
    assert_eq!(reinstall.calls.len(), 3);

    let env = fixture.env(ServiceManager::Systemd);
    let mut systemd = FakeRunner::default();
    agent::install(&env, &spec, false, &mut systemd).expect("install");
    let unit = format!("{label}.service");
    assert_eq!(
        systemd.calls,
        [
            call(&["systemctl", "--user", "daemon-reload"]),
            call(&["systemctl", "--user", "enable", &unit]),
            call(&["systemctl", "--user", "restart", &unit]),
        ]
    );
}

fn unit_extension(manager: ServiceManager) -> &'static str {
    match manager {
        ServiceManager::Launchd => "plist",
        ServiceManager::Systemd => "service",
    }
}

#[test]
fn list_finds_installed_agents_and_flags_broken_files() {
    let fixture = Fixture::new("app");
    let other = fixture.home.path().join("work/app");
    std::fs::create_dir_all(&other).expect("mkdir");
    let other = other.canonicalize().expect("canonical");
    for manager in [ServiceManager::Launchd, ServiceManager::Systemd] {
        let env = fixture.env(manager);
        install(&fixture, manager, &fixture.request());
        let other_request = InstallRequest {
            dir: Some(other.clone()),
            ..fixture.request()
        };
        install(&fixture, manager, &other_request);
        let unrelated = env
            .unit_dir()
            .join(format!("com.example.thing.{}", unit_extension(manager)));
        std::fs::write(&unrelated, "whatever").expect("write unrelated");
        let broken_label = "dev.mirror-baton.broken";
        std::fs::write(env.unit_path(broken_label), "not a plist nor a unit")
            .expect("write broken");

        let summary: Vec<(String, Option<PathBuf>, bool)> = agent::list(&env)
            .expect("list")
            .into_iter()
            .map(|a| (a.label, a.working_dir, a.parse_error.is_none()))
            .collect();
        let mut expected = vec![
            (broken_label.to_owned(), None, false),
            (
                agent::default_label(&fixture.project),
                Some(fixture.project.clone()),
                true,
            ),
            (agent::default_label(&other), Some(other.clone()), true),
        ];
        expected.sort();
        assert_eq!(summary, expected, "{manager:?}");
    }
}

#[test]
fn uninstall_unloads_then_removes_the_file() {
    let fixture = Fixture::new("app");
    let label = agent::default_label(&fixture.project);
    for manager in [ServiceManager::Launchd, ServiceManager::Systemd] {
        let env = fixture.env(manager);
        let path = install(&fixture, manager, &fixture.request());
        let mut runner = FakeRunner {
            loaded: true,
            ..FakeRunner::default()
        };
        let target = UninstallTarget::Dir(Some(fixture.project.clone()));
        let report = agent::uninstall(&env, &target, &mut runner).expect("uninstall");
        assert_eq!(
            (report.unit_path.as_path(), report.unloaded),
            (path.as_path(), true)
        );
        assert!(!path.exists());
        assert!(env.log_dir().is_dir(), "logs are kept");
        let expected_calls = match manager {
            ServiceManager::Launchd => vec![
                call(&["launchctl", "print", &format!("gui/{UID}/{label}")]),
                call(&["launchctl", "bootout", &format!("gui/{UID}/{label}")]),
            ],
            ServiceManager::Systemd => vec![
                call(&[
                    "systemctl",
                    "--user",
                    "disable",
                    "--now",
                    &format!("{label}.service"),
                ]),
                call(&["systemctl", "--user", "daemon-reload"]),
            ],
        };
        assert_eq!(runner.calls, expected_calls, "{manager:?}");

        let error = agent::uninstall(&env, &target, &mut FakeRunner::default())
            .expect_err("nothing left to uninstall");
        assert!(
            matches!(error, AgentError::NotInstalled { .. }),
            "{error:?}"
        );
    }
}

#[test]
fn uninstall_by_dir_finds_a_custom_label_even_after_the_dir_is_gone() {
    let fixture = Fixture::new("app");
    for manager in [ServiceManager::Launchd, ServiceManager::Systemd] {
        let env = fixture.env(manager);
        let request = InstallRequest {
            label: Some("laptop".to_owned()),
            ..fixture.request()
        };
        let path = install(&fixture, manager, &request);
        let moved = fixture.project.with_file_name("app-moved");
        std::fs::rename(&fixture.project, &moved).expect("move project away");

        let target = UninstallTarget::Dir(Some(fixture.project.clone()));
        let report = agent::uninstall(&env, &target, &mut FakeRunner::default())
            .expect("found by its recorded working directory");
        assert_eq!(report.label, "dev.mirror-baton.laptop");
        assert!(!path.exists());
        std::fs::rename(&moved, &fixture.project).expect("move back");
    }
}

#[test]
fn print_renders_the_same_file_and_writes_nothing() {
    let fixture = Fixture::new("app");
    for manager in [ServiceManager::Launchd, ServiceManager::Systemd] {
        let env = fixture.env(manager);
        let before = files_under(fixture.home.path());
        let printed = agent::print(&env, &fixture.request()).expect("print");
        assert_eq!(
            files_under(fixture.home.path()),
            before,
            "print wrote a file"
        );
        assert!(!env.unit_dir().exists() && !env.log_dir().exists());

        let written = install(&fixture, manager, &fixture.request());
        assert_eq!(std::fs::read_to_string(written).expect("read"), printed);
    }
    let printed =
        agent::print(&fixture.env(ServiceManager::Launchd), &fixture.request()).expect("print");
    plist::Value::from_reader_xml(printed.as_bytes()).expect("printed plist parses");
}

#[test]
fn reinstall_replaces_the_file_and_leaves_no_temporary_files() {
    let fixture = Fixture::new("app");
    let path = install(&fixture, ServiceManager::Launchd, &fixture.request());
    let mut request = fixture.request();
    request.child_command = vec!["other".to_owned()];
    assert_eq!(install(&fixture, ServiceManager::Launchd, &request), path);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains("<string>other</string>") && !text.contains("bunx"));
    let names = files_under(path.parent().expect("parent"));
    assert_eq!(names, [path]);
}

#[test]
fn bad_directories_are_clear_errors_not_panics() {
    let fixture = Fixture::new("app");
    let env = fixture.env(ServiceManager::Launchd);
    let request = |dir: PathBuf| InstallRequest {
        dir: Some(dir),
        ..InstallRequest::default()
    };

    let missing = fixture.home.path().join("nope");
    let error = AgentSpec::from_request(&env, &request(missing.clone())).expect_err("missing");
    assert!(
        matches!(&error, AgentError::DirNotFound { path } if *path == missing),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not exist"));

    let file = fixture.home.path().join("file.txt");
    std::fs::write(&file, "x").expect("write");
    let error = AgentSpec::from_request(&env, &request(file)).expect_err("file");
    assert!(
        matches!(error, AgentError::NotADirectory { .. }),
        "{error:?}"
    );

    use std::os::unix::ffi::OsStrExt;
    let non_utf8 = fixture
        .home
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&non_utf8).expect("mkdir non-UTF-8");
    let error = AgentSpec::from_request(&env, &request(non_utf8.clone())).expect_err("non-utf8");
    assert!(matches!(error, AgentError::NonUtf8Path { .. }), "{error:?}");
    assert!(agent::default_label(&non_utf8).starts_with("dev.mirror-baton.caf-"));

    let relative = AgentSpec::from_request(&env, &request(PathBuf::from("code/app")))
        .expect("relative to cwd");
    assert_eq!(relative.working_dir, fixture.project);
    let current = AgentSpec::from_request(
        &AgentEnv {
            cwd: fixture.project.clone(),
            ..env.clone()
        },
        &InstallRequest::default(),
    )
    .expect("no DIR: current directory");
    assert_eq!(current.working_dir, fixture.project);
    assert_eq!(
        current.run_args,
        ["run", fixture.project.to_str().expect("utf-8")],
        "no child: no `--`"
    );

    let error = AgentSpec::from_request(
        &AgentEnv {
            program: "baton".into(),
            ..env
        },
        &fixture.request(),
    )
    .expect_err("relative program");
    assert!(
        matches!(error, AgentError::ProgramNotAbsolute { .. }),
        "{error:?}"
    );
}

#[test]
fn the_stop_timeout_covers_the_longest_clean_stop() {
    use mirror_baton::runtime::resignation_deadline;
    use mirror_baton::serving::{
        ACK_WAIT_BUSY_MAX, ACK_WAIT_MAX, CHILD_GRACE, REPLY_FLUSH_MAX, child_grace_after,
    };
    let timing = mirror_baton::core::Timing::default();
    let budget = mirror_baton::runtime::exit_budget(&timing);
    // Default mode: the resignation, then the child's stop at exit with what grace the
    // acknowledgement wait left it. --child-when-active: the child stops inside it.
    for waited in [std::time::Duration::ZERO, ACK_WAIT_MAX, ACK_WAIT_BUSY_MAX] {
        let grace = child_grace_after(waited);
        assert!(waited.max(ACK_WAIT_MAX) + grace <= ACK_WAIT_MAX + CHILD_GRACE);
        assert!(resignation_deadline(&timing, false) + grace + REPLY_FLUSH_MAX <= budget);
    }
    assert!(resignation_deadline(&timing, true) + REPLY_FLUSH_MAX <= budget);
    assert!(
        budget < agent::STOP_TIMEOUT,
        "a clean stop may take {budget:?}; the service manager kills after {:?}",
        agent::STOP_TIMEOUT
    );
}
