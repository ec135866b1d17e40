//! What the mail reader remembers (issue 11): which mail it handed to the gateway under
//! which tag, the core's acknowledgement tracker, and the child's pinned start time.
//! Its behaviour is `serving::routing`'s. Must never: do IO.

use std::collections::HashMap;

use crate::core::mailbox::AckTracker;
use crate::core::record::MailAck;

/// Mail handed to the gateway and not yet fetched, at most (the gateway's own bound is
/// larger; mail past this waits in its mailbox for the next look).
pub(super) const IN_FLIGHT_MAX: usize = 1_000;

#[derive(Debug, Default)]
pub(crate) struct MailReader {
    pub(super) tracker: AckTracker,
    /// Gateway tag → (writer, epoch, seq).
    pub(super) in_flight: HashMap<u64, (String, String, u64)>,
    pub(super) next_tag: u64,
    /// The child's pinned `STARTUP_TIMESTAMP` (unix seconds).
    pub(super) startup_s: i64,
    pub(super) last_acks: Vec<MailAck>,
    /// `--child-when-active` on a standby: the child was started to serve mail.
    pub(super) child_for_mail: bool,
    /// When mail was last handed to the child (or seen in flight) while standby.
    pub(super) last_mail_at: Option<tokio::time::Instant>,
}

impl MailReader {
    pub(crate) fn new(startup_s: i64) -> MailReader {
        MailReader {
            startup_s,
            ..MailReader::default()
        }
    }
}
