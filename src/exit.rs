//! The process's exit codes: the one table (README "Exit codes").
//!
//! Owns: every code a `baton` process can end with, whichever command or module asks
//! for it. A leaf: it depends on nothing of the product, so every module can name a
//! code without reaching up to the command line. Must never: be bypassed by a bare
//! number where a code is chosen.

/// How a `baton` process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// A clean stop.
    Ok = 0,
    /// A runtime failure (IO, a folder that cannot be created); a demo whose story did
    /// not complete or lost updates.
    Failure = 1,
    /// Bad flags or configuration (clap also exits 2).
    Usage = 2,
    /// Another live process writes this device id (a cloned or restored Mac, a copied
    /// state folder). The core asks for it (`Effect::Exit`).
    DuplicateDevice = 3,
    /// A `baton run` for this device already runs on this machine.
    AlreadyRunning = 4,
    /// `baton activate`: no running baton on this machine to ask.
    NoDaemon = 5,
    /// `baton activate`: refused, or not done in time.
    ActivationFailed = 6,
    /// `baton child-guard`: the command could not be started (as a shell says "command
    /// not found").
    CannotStart = 127,
    /// A forced exit on a second SIGINT/SIGTERM, or a demo interrupted by Ctrl-C.
    Forced = 130,
}

impl ExitCode {
    /// The number the process exits with.
    pub const fn code(self) -> i32 {
        self as i32
    }
}

// The core names the codes it can ask for (it cannot depend on this crate): they must
// be these.
const _: () = assert!(ExitCode::Ok.code() == baton_core::io::exit_code::OK);
const _: () =
    assert!(ExitCode::DuplicateDevice.code() == baton_core::io::exit_code::DUPLICATE_DEVICE);
