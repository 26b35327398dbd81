//! Binding the control socket with the right owner and mode.
//!
//! The socket is bound under a temporary name, given its mode (and group) and only then renamed
//! into place, so no client ever sees it with looser permissions than configured. A stale socket
//! left by a crashed daemon is replaced; a live one (someone answers) or a non-socket file at the
//! path is an error, never silently deleted.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::ControlError;

/// Default mode of the socket file: owner and group may connect, nobody else.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// How to create the socket file.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// File mode, [`DEFAULT_SOCKET_MODE`] unless told otherwise.
    pub mode: u32,
    /// Group that owns the socket file (e.g. the group the power process runs in). `None` keeps
    /// the daemon's primary group.
    pub group: Option<String>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            mode: DEFAULT_SOCKET_MODE,
            group: None,
        }
    }
}

/// A bound control socket. Removes its file when dropped (if the file is still this socket).
#[derive(Debug)]
pub struct ControlListener {
    pub(crate) listener: UnixListener,
    guard: SocketGuard,
}

/// Removes the socket file when dropped, if the file is still this socket (a newer daemon may
/// have replaced it).
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    inode: u64,
}

impl ControlListener {
    /// Bind `path` with `opts`. Must be called inside a tokio runtime.
    pub async fn bind(path: &Path, opts: &SocketOptions) -> Result<Self, ControlError> {
        let bind_err = |source: std::io::Error| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(bind_err)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ControlError::InUse(path.to_path_buf()));
                }
                tracing::info!(socket.path = %path.display(), "removing stale control socket {}", path.display());
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Ok(_) => return Err(ControlError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }

        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        // A leftover from an earlier crash of this very pid number is not ours to keep.
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
        let finish = || -> Result<u64, std::io::Error> {
            if let Some(group) = &opts.group {
                let gid = nix::unistd::Group::from_name(group)
                    .map_err(std::io::Error::from)?
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("group {group} does not exist"),
                        )
                    })?
                    .gid;
                nix::unistd::chown(&tmp, None, Some(gid)).map_err(std::io::Error::from)?;
            }
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opts.mode))?;
            std::fs::rename(&tmp, path)?;
            Ok(std::fs::symlink_metadata(path)?.ino())
        };
        match finish() {
            Ok(inode) => Ok(ControlListener {
                listener,
                guard: SocketGuard {
                    path: path.to_path_buf(),
                    inode,
                },
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(bind_err(e))
            }
        }
    }

    /// Where the socket lives.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }

    /// The listener, for a server other than the control protocol's (the uplink socket speaks
    /// HTTP), and the guard that removes the file: keep it as long as the listener.
    pub fn into_parts(self) -> (UnixListener, SocketGuard) {
        (self.listener, self.guard)
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // Only remove the file if it is still ours: a newer daemon may have replaced it.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
