//! The local control socket: how `baton activate` and `baton status` on this machine talk
//! to a running `baton run`.
//!
//! Owns: the one-line JSON protocol over a Unix socket in the LOCAL state folder (never
//! the synced one). Must never: accept connections from other users (the socket is mode
//! 0600 in a 0700 folder) or hold a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::core::ActivationOutcome;
use crate::core::election::DeviceRow;

/// A request line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Activate {
        target: String,
    },
    Table,
    /// A router on this host just wrote mail addressed to this device: read the mail
    /// folder now rather than when its watcher or backstop says (issue 11's same-host
    /// path). Carries nothing: what is addressed to us is read from the folder.
    MailWaiting,
}

/// A reply line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Activation {
        device_id: String,
        result: ActivationOutcome,
    },
    Table {
        device_id: String,
        role: String,
        rows: Vec<DeviceRow>,
    },
    Error {
        message: String,
    },
    /// A request that needs no answer was taken.
    Noted,
}

/// A request handed to the runtime, with where to send the reply.
pub struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach baton at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("baton at {path} did not answer: {detail}")]
    NoAnswer { path: PathBuf, detail: String },
}

/// Listens at `path` (replacing a stale socket) and forwards requests to `commands`.
pub fn listen(
    path: &Path,
    commands: mpsc::Sender<Command>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let bind_error = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(bind_error)?;
        set_mode(parent, 0o700);
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    set_mode(path, 0o600);
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let commands = commands.clone();
            tokio::spawn(serve(stream, commands));
        }
    }))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Longest request line accepted.
const REQUEST_BYTES_MAX: usize = 4096;

async fn serve(stream: UnixStream, commands: mpsc::Sender<Command>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(REQUEST_BYTES_MAX as u64);
    let reply = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if commands.send(Command { request, reply: tx }).await.is_err() {
                    Reply::Error {
                        message: "baton is stopping".into(),
                    }
                } else {
                    rx.await.unwrap_or(Reply::Error {
                        message: "baton is stopping".into(),
                    })
                }
            }
            Err(error) => Reply::Error {
                message: format!("bad request: {error}"),
            },
        },
        Err(error) => Reply::Error {
            message: format!("cannot read request: {error}"),
        },
    };
    // serde_json cannot fail on these plain types.
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// Sends one request and waits (bounded) for the reply.
pub async fn ask(path: &Path, request: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let no_answer = |detail: String| ControlError::NoAnswer {
        path: path.to_path_buf(),
        detail,
    };
    let exchange = async {
        let mut stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ControlError::Connect {
                    path: path.to_path_buf(),
                    source,
                })?;
        let mut text = serde_json::to_string(request).map_err(|e| no_answer(e.to_string()))?;
        text.push('\n');
        stream
            .write_all(text.as_bytes())
            .await
            .map_err(|e| no_answer(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| no_answer(e.to_string()))?;
        serde_json::from_str(&line).map_err(|e| no_answer(format!("{e} in {line:?}")))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| no_answer(format!("no reply within {timeout:?}")))?
}
