//! The supervised child of serving: its spec (guarded, with the environment baton gives
//! it) and what is logged about that environment.
//!
//! Owns: [`ChildSide`] (the supervisor, whether it runs only while Active, its grace for
//! the next stop) and building the child's spec from a [`ChildPlan`]. Must never: log an
//! environment value (names only), or start the child before the device lock is held.

use std::time::Duration;

use tokio::sync::watch;

use crate::adapters::child::{ChildSpec, ChildState, ChildSupervisor};
use crate::adapters::child_env::{self, Note};

use super::acknowledgement::StopSignals;
use super::plan::ChildPlan;
use super::telegram_side::TelegramSide;

/// The supervised child.
pub(crate) struct ChildSide {
    pub(super) supervisor: ChildSupervisor,
    pub(super) only_when_active: bool,
    pub(super) state: watch::Receiver<ChildState>,
    /// Its grace for the next stop: [`CHILD_GRACE`], less what an acknowledgement wait
    /// took beyond [`ACK_WAIT_MAX`].
    pub(super) grace: Duration,
}

/// Records a stop signal: the first one's arrival (the earliest seen) and token, or the
/// second's.
pub(crate) fn note(
    signals: &StopSignals,
    at: &watch::Sender<Option<tokio::time::Instant>>,
    forced: bool,
) {
    if forced {
        signals.second.cancel();
        return;
    }
    at.send_if_modified(|at| {
        let first = at.is_none();
        if first {
            *at = Some(tokio::time::Instant::now());
        }
        first
    });
    signals.first.cancel();
}

/// The child's spec with the environment baton gives it and the secrets to scrub from
/// its output; logs which variables baton set and which the user's setting kept.
pub(crate) fn child_spec(
    plan: ChildPlan,
    device_id: &str,
    telegram: &Option<TelegramSide>,
) -> ChildSpec {
    let mut spec = plan.spec;
    let startup_timestamp_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let side = telegram.as_ref().map(|side| child_env::TelegramSide {
        config: &side.config,
        updates_url: side.gateway.updates_url(),
    });
    let env = child_env::child_env(&plan.mirror, side, device_id, startup_timestamp_s);
    log_child_env(&env);
    let sets_db = env
        .vars
        .iter()
        .any(|(name, _)| name == child_env::ENV_DB_PATH);
    if let Some(folder) = plan.mirror.db_path.parent().filter(|_| sets_db)
        && let Err(error) = std::fs::create_dir_all(folder)
    {
        tracing::warn!(folder = %folder.display(), %error, "cannot create the folder for the mirror's database");
    }
    if let Some(side) = telegram {
        let send_url = side
            .config
            .api_url
            .as_ref()
            .map(|url| child_env::send_url(url, &side.config.bot_token));
        spec.secrets = child_env::child_secrets(
            &side.config.bot_token,
            send_url.as_ref(),
            &side.gateway.secrets(),
        );
    }
    spec.extra_env.extend(env.vars);
    spec
}

pub(super) fn log_child_env(env: &child_env::ChildEnv) {
    let set: Vec<&str> = env.vars.iter().map(|(name, _)| name.as_str()).collect();
    tracing::info!(set = ?set, "the child's environment: baton sets these variables");
    for note in &env.notes {
        match note {
            Note::Set { .. } => {}
            Note::Kept { name, origin } => {
                tracing::info!(name, %origin, "the child's environment: the user's own setting is kept")
            }
            Note::Differs {
                name,
                theirs,
                served,
            } => tracing::warn!(
                name,
                %theirs,
                %served,
                "the child's environment sets {name}={theirs}, but baton serves {served}: the gateway will refuse the child (403) until they agree"
            ),
            Note::Replaced { name } => tracing::info!(
                name,
                "the child's environment: baton's gateway replaces the user's {name}"
            ),
        }
    }
}
