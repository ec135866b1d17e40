//! `baton`: parse the command line, set up logging, run the command, map errors to the
//! documented exit codes. The only place `anyhow` errors end.

use clap::Parser;
use mirror_baton::adapters::child::ChildSpec;
use mirror_baton::adapters::child_env::MirrorContext;
use mirror_baton::adapters::local::{self, LocalError};
use mirror_baton::adapters::telegram::PollerConfig;
use mirror_baton::adapters::telegram_config::config_files;
use mirror_baton::adapters::telegram_config::redact_token_shapes;
use mirror_baton::cli::{self, Cli, Command, LogFormat};
use mirror_baton::config::{self, Reload, RunConfig, UsageError};
use mirror_baton::core::Timing;
use mirror_baton::exit::ExitCode;
use mirror_baton::runtime::{self, RunError};
use mirror_baton::serving::{ChildPlan, TelegramPlan};

fn main() {
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("baton: cannot start the async runtime: {error}");
            std::process::exit(ExitCode::Failure.code());
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("baton: {}", redact_token_shapes(&format!("{error:#}")));
            exit_code_for(&error)
        }
    };
    std::process::exit(code);
}

fn exit_code_for(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<UsageError>().is_some() {
        return ExitCode::Usage.code();
    }
    if let Some(error) = error.downcast_ref::<cli::CliError>() {
        return error.exit_code();
    }
    match error.downcast_ref::<RunError>() {
        Some(RunError::Local(LocalError::AlreadyRunning { .. })) => ExitCode::AlreadyRunning.code(),
        _ => ExitCode::Failure.code(),
    }
}

async fn run(global: &cli::GlobalArgs, args: cli::RunArgs) -> anyhow::Result<i32> {
    let project = config::project_dir(&args.dir)?;
    let telegram = cli::telegram_config(&project, &args.telegram)?;
    let settings = cli::settings(global, telegram.as_ref().and_then(cli::bot_id))?;
    let thread_id = telegram.as_ref().and_then(|t| t.thread_id);
    let identity = cli::identity(
        &project,
        &args.device,
        &settings.state_dir,
        args.priority,
        thread_id,
    )?;
    let seed = args.seed.unwrap_or_else(rand::random);
    if args.child_when_active && args.command.is_empty() {
        return Err(UsageError("--child-when-active needs a command after `--`".into()).into());
    }
    let child = args.command.split_first().map(|(program, rest)| {
        let mut spec = ChildSpec::new(program, rest.iter().map(Into::into).collect(), &project);
        spec.guard_grace = mirror_baton::serving::CHILD_GRACE;
        match std::env::current_exe() {
            Ok(baton) => spec.guard = Some(baton),
            Err(error) => tracing::warn!(
                %error,
                "cannot find this baton binary to guard the child; if baton crashes, the child may outlive it"
            ),
        }
        let stem = mirror_baton::core::record::file_stem(&identity.device_id);
        ChildPlan {
            spec,
            only_when_active: args.child_when_active,
            mirror: MirrorContext {
                // Names and values that are not UTF-8 cannot matter to the mirror's
                // configuration: they are passed on as inherited, only not read here.
                inherited: std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect(),
                config_files: config_files(dirs::home_dir().as_deref(), &project),
                db_path: local::mirror_db_path(&settings.state_dir, &settings.group, &stem),
            },
        }
    });
    let telegram = telegram.map(|config| TelegramPlan {
        // The poller's jitter has its own stream; the core's is the seed itself.
        poller: PollerConfig::new(
            config.chat_id,
            config.thread_id,
            mirror_baton::core::seed::derive(seed, "poller"),
        ),
        config,
        poll_timeout: std::time::Duration::from_secs(args.telegram.poll_timeout),
        device_tag: Some(identity.device_id.clone()),
    });
    if telegram.is_none() {
        tracing::info!("no Telegram bot token configured: coordinating only");
    }
    let config = RunConfig {
        identity,
        sync_dir: settings.sync_dir,
        group: settings.group,
        state_dir: settings.state_dir,
        timing: Timing {
            record_retention: std::time::Duration::from_secs(args.retention_hours * 3600),
            ..settings.timing
        },
        seed,
        watch_mode: cli::watch_mode(args.poll)?,
        telegram,
        child,
        reload: Some(reloader(project, args.telegram.clone())),
    };
    // Every line logged by this run — the poller's, the child's, the gateway's — names
    // the device; the run loop's own lines add the role.
    let span = tracing::info_span!("device", id = %config.identity.device_id);
    Ok(tracing::Instrument::instrument(runtime::run(config), span).await?)
}

/// SIGHUP: re-read the Telegram configuration; compare fingerprints that carry no token.
fn reloader(project: std::path::PathBuf, args: cli::TelegramArgs) -> Reload {
    Box::new(move || {
        let config = cli::telegram_config(&project, &args)
            .map_err(|error| redact_token_shapes(&error.to_string()).into_owned())?;
        Ok(match config {
            None => "no telegram".to_string(),
            // Compared in memory only, never logged.
            Some(config) => format!(
                "token {:x} chat {} thread {:?} api {:?}",
                mirror_baton::core::record::stable_hash(config.bot_token.expose().as_bytes()),
                config.chat_id,
                config.thread_id,
                config.api_url.as_ref().map(|url| url.to_string())
            ),
        })
    })
}

/// stderr for the log, with every token-shaped value redacted: a token pasted where it
/// does not belong (a chat id, a child's argument, a library's error text) never
/// reaches the log, whichever line carries it. The fmt layer writes each event whole.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        std::io::stderr().write_all(redact_token_shapes(&text).as_bytes())?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => run(&cli.global, args).await,
        Command::Status(args) => {
            let settings = cli::settings(&cli.global, None)?;
            Ok(cli::status::run(&settings, &args).await?)
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => mirror_baton::demo::run_demo(args).await,
        #[cfg(feature = "demo")]
        Command::MirrorStub(args) => Ok(baton_testkit::mirror_stub::run(args).await?),
        Command::ChildGuard(args) => Ok(mirror_baton::child_guard::run(args).await),
        #[cfg(feature = "demo")]
        Command::FakeTelegram(args) => {
            let config = baton_testkit::fake_bot_api::FakeBotConfig {
                token: args.token,
                ..Default::default()
            };
            let fake = baton_testkit::fake_bot_api::serve(args.listen, config).await?;
            println!("{}", fake.api_url());
            tokio::signal::ctrl_c().await?;
            Ok(ExitCode::Ok.code())
        }
        Command::Simulate(mut args) => {
            args.time_scale = cli.global.time_scale;
            cli::simulate::run_simulate(args)
        }
        Command::Replay(args) => Ok(mirror_baton::replay::run_replay(
            &args,
            &mut std::io::stdout(),
        )?),
        Command::Record(args) => {
            let settings = cli::settings(&cli.global, None)?;
            let code = tokio::task::spawn_blocking(move || {
                mirror_baton::replay::run_record(&args, &settings.sync_dir, &settings.group)
            })
            .await??;
            Ok(code)
        }
        Command::Agent(command) => {
            let options = mirror_baton::agent::verbs::RunOptions {
                sync_dir: cli.global.sync_dir.clone(),
                group: cli.global.group.clone(),
            };
            Ok(mirror_baton::agent::verbs::run(&options, &command)?)
        }
        Command::Doctor(args) => Ok(mirror_baton::doctor::run(&cli.global, &args).await?),
        Command::Activate(args) => {
            let settings = cli::settings(&cli.global, None)?;
            Ok(cli::activate(&settings, &args).await?)
        }
    }
}
