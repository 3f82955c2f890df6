//! One service process of `rlm up`: started in its own process group (so a
//! terminal's Ctrl-C reaches only `rlm`, which then stops it exactly once),
//! killed if `rlm` dies, its output forwarded line by line with a prefix.

use std::io::IsTerminal;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::exit::Failure;

pub struct Service {
    pub name: &'static str,
    child: Child,
}

impl Service {
    /// Starts `binary` with the current environment plus `env`.
    pub fn start(
        name: &'static str,
        binary: &Path,
        env: &[(String, String)],
        color: u8,
    ) -> Result<Self, Failure> {
        let mut command = Command::new(binary);
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl with scalar arguments is async-signal-safe, as pre_exec requires.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| Failure::other(format!("starting {}: {e}", binary.display())))?;
        let prefix = prefix(name, color);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward(out, prefix.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(err, prefix));
        }
        Ok(Self { name, child })
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.id().map(|id| Pid::from_raw(id as i32))
    }

    /// The exit status once the process ends.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The exit status if the process already ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// SIGTERM (the service drains), then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                eprintln!(
                    "rlm up: {} did not stop within {grace:?}; killing it",
                    self.name
                );
                let _ = self.child.kill().await;
                self.child.wait().await.ok()
            }
        }
    }
}

fn prefix(name: &str, color: u8) -> String {
    let label = format!("{name:>12} |");
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[{color}m{label}\x1b[0m ")
    } else {
        format!("{label} ")
    }
}

async fn forward(stream: impl AsyncRead + Unpin, prefix: String) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{prefix}{line}");
    }
}
