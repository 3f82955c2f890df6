//! Listen addresses (`host:port`, `tcp://host:port`, `unix:///path`) and binding them.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The forms [`Address::parse`] accepts, for error messages.
pub const ADDRESS_FORMS: &str = "HOST:PORT, tcp://HOST:PORT, or unix:///ABSOLUTE/PATH";

impl Address {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix://") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(
                    "a unix socket path must be absolute (unix:///run/rlm/sandbox.sock)".into(),
                );
            }
            return Ok(Self::Unix(path.to_owned()));
        }
        let host_port = text
            .strip_prefix("tcp://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(text);
        host_port
            .parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("`{host_port}` is not an IP address with a port"))
    }

    /// Parses a TCP-only address (`HOST:PORT` or `tcp://HOST:PORT`).
    pub fn parse_tcp(text: &str) -> Result<SocketAddr, String> {
        match Self::parse(text)? {
            Self::Tcp(addr) => Ok(addr),
            Self::Unix(_) => Err("a TCP address is required here".into()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// Binds a Unix socket at `path` with permission bits `mode`.
///
/// A socket file left by a dead process is replaced; anything else at the path
/// (a regular file, a symlink, a live server) is refused rather than touched.
pub async fn bind_unix(path: &Path, mode: u32) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating socket directory {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!("{} is in use by a running server", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("inspecting {}", path.display())),
    }
    // Bind under a private name, narrow the mode, then rename into place: no
    // client can reach the socket while it still has the default mode.
    let staging = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging)
        .with_context(|| format!("binding unix socket {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", staging.display()))?;
    std::fs::rename(&staging, path)
        .with_context(|| format!("moving socket into place at {}", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        assert_eq!(
            Address::parse("127.0.0.1:50051"),
            Ok(Address::Tcp("127.0.0.1:50051".parse().expect("addr")))
        );
        assert_eq!(
            Address::parse("tcp://[::1]:7"),
            Ok(Address::Tcp("[::1]:7".parse().expect("addr")))
        );
        assert_eq!(
            Address::parse("unix:///run/rlm/sandbox.sock"),
            Ok(Address::Unix("/run/rlm/sandbox.sock".into()))
        );
        assert!(Address::parse("unix://relative.sock").is_err());
        assert!(Address::parse("localhost").is_err());
        assert!(Address::parse_tcp("unix:///x").is_err());
    }

    #[tokio::test]
    async fn unix_socket_gets_the_mode_and_refuses_non_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = bind_unix(&path, 0o600).await.expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live server is not replaced.
        assert!(bind_unix(&path, 0o600).await.is_err());
        drop(listener);
        // A stale socket is.
        bind_unix(&path, 0o600)
            .await
            .expect("rebind over stale socket");

        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        assert!(bind_unix(&file, 0o600).await.is_err());
        assert_eq!(std::fs::read(&file).expect("read"), b"x");
    }
}
