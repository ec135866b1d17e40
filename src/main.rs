//! `baton`: parse the command line, set up logging, run the command, map errors to the
//! documented exit codes. The only place `anyhow` errors end.

use clap::Parser;
use mirror_baton::adapters::local::LocalError;
use mirror_baton::cli::{self, Cli, Command, LogFormat, UsageError, exit};
use mirror_baton::runtime::{self, RunConfig, RunError};
use mirror_baton::serving::Serving;

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
            std::process::exit(exit::FAILURE);
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("baton: {error:#}");
            exit_code_for(&error)
        }
    };
    std::process::exit(code);
}

fn exit_code_for(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<UsageError>().is_some() {
        return exit::USAGE;
    }
    match error.downcast_ref::<RunError>() {
        Some(RunError::Local(LocalError::AlreadyRunning { .. })) => exit::ALREADY_RUNNING,
        _ if matches!(
            error.downcast_ref::<LocalError>(),
            Some(LocalError::AlreadyRunning { .. })
        ) =>
        {
            exit::ALREADY_RUNNING
        }
        _ => exit::FAILURE,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
        Command::Run(args) => {
            let settings = cli::settings(&cli.global, None)?;
            let identity = cli::identity(
                &args.dir,
                &args.device,
                &settings.state_dir,
                args.priority,
                None,
            )?;
            let seed = args.seed.unwrap_or_else(rand::random);
            let config = RunConfig {
                identity,
                sync_dir: settings.sync_dir,
                group: settings.group,
                state_dir: settings.state_dir,
                timing: settings.timing,
                seed,
                watch_mode: cli::watch_mode(args.poll)?,
                serving: Serving::coordination_only(),
            };
            Ok(runtime::run(config).await?)
        }
        Command::Status(args) => {
            let settings = cli::settings(&cli.global, None)?;
            loop {
                let (rows, source) = cli::load_table(&settings).await?;
                if args.json {
                    let value = serde_json::json!({
                        "group": settings.group,
                        "source": source,
                        "devices": rows,
                    });
                    println!("{}", serde_json::to_string_pretty(&value)?);
                } else {
                    if args.watch {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", cli::render_table(&rows, source));
                }
                if !args.watch {
                    return Ok(exit::OK);
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
        Command::Activate(args) => {
            let settings = cli::settings(&cli.global, None)?;
            cli::activate(&settings, &args).await
        }
    }
}
