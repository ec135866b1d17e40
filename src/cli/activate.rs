//! `baton activate`: asks a local daemon to activate a device, then watches the folder
//! until the target is active.
//!
//! Owns: resolving "this device", trying the local control sockets, and reporting how
//! the request ended with the documented exit codes. Must never: decide the handoff
//! itself (the running baton's core does).

use std::time::Duration;

use crate::adapters::control::{self, Reply, Request};
use crate::adapters::local;
use crate::config::{Settings, project_dir};
use crate::core::election::Health;
use crate::core::record::{self};
use crate::core::{ActivationOutcome, Status};
use crate::exit::ExitCode;

use super::args::ActivateArgs;
use super::error::CliError;
use super::settings::hostname;
use super::status::load_table;

/// `baton activate`: ask a local daemon, then watch the folder until the target is active.
pub async fn activate(settings: &Settings, args: &ActivateArgs) -> Result<i32, CliError> {
    let own_id = {
        let project = project_dir(&args.dir)?;
        let name = args
            .device
            .device_name
            .as_deref()
            .filter(|n| !n.trim().is_empty());
        record::device_id(name, &hostname(), &project.to_string_lossy())
    };
    let target = args.target.clone().unwrap_or_else(|| own_id.clone());
    let own_socket = local::control_socket(
        &settings.state_dir,
        &settings.group,
        &record::file_stem(&own_id),
    );
    let mut sockets = vec![own_socket];
    sockets.extend(local::group_sockets(&settings.state_dir, &settings.group));
    let request = Request::Activate {
        target: target.clone(),
    };
    let mut reply = None;
    for socket in sockets {
        if let Ok(answer) = control::ask(&socket, &request, Duration::from_secs(5)).await {
            reply = Some(answer);
            break;
        }
    }
    let Some(reply) = reply else {
        eprintln!(
            "no baton is running on this machine for group {:?}; start one with `baton run` (the request travels through it)",
            settings.group
        );
        return Ok(ExitCode::NoDaemon.code());
    };
    match device_to_wait_for(reply)? {
        Ok(wanted) => wait_until_active(settings, &wanted).await,
        Err(code) => Ok(code.code()),
    }
}

/// What the running baton answered: the device whose activation is under way
/// (`Ok(device)`), or the code to exit with now (`Err`), having said why.
fn device_to_wait_for(reply: Reply) -> Result<Result<String, ExitCode>, CliError> {
    let (asked_via, result) = match reply {
        Reply::Activation { device_id, result } => (device_id, result),
        Reply::Error { message } => {
            eprintln!("baton refused: {message}");
            return Ok(Err(ExitCode::ActivationFailed));
        }
        Reply::Table { .. } | Reply::Noted => {
            return Err(CliError::Daemon(
                "an answer to another request came back for an activation request".into(),
            ));
        }
    };
    Ok(match result {
        ActivationOutcome::AlreadyActive { device } => {
            println!("{device} is already active");
            Err(ExitCode::Ok)
        }
        ActivationOutcome::Done { device } => {
            println!("✅ {device} is now ACTIVE");
            Err(ExitCode::Ok)
        }
        ActivationOutcome::Failed { reason } => {
            eprintln!("cannot activate: {reason}");
            Err(ExitCode::ActivationFailed)
        }
        ActivationOutcome::HandingOver { to } => {
            println!("{asked_via} is handing over to {to} …");
            Ok(to)
        }
        ActivationOutcome::Requested { to, leader } => {
            let leader = leader.unwrap_or_else(|| "(no active device yet)".into());
            println!("asked {leader} to hand over to {to} …");
            Ok(to)
        }
        ActivationOutcome::Contending => {
            println!("no device is active; {asked_via} is claiming the role …");
            Ok(asked_via)
        }
    })
}

async fn wait_until_active(settings: &Settings, wanted: &str) -> Result<i32, CliError> {
    let limit = settings.timing.request_timeout + settings.timing.handoff_timeout;
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        let (rows, _) = load_table(settings).await?;
        if rows.iter().any(|row| {
            row.device_id == wanted && row.role == Status::Active && row.health == Health::Ok
        }) {
            println!("✅ {wanted} is now ACTIVE");
            return Ok(ExitCode::Ok.code());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{wanted} did not become active within {limit:?}; see `baton status`");
    Ok(ExitCode::ActivationFailed.code())
}
