//! Support for the end-to-end tests: start the real binaries as processes, wait
//! for them, talk to them over their real sockets, and stop them.
//!
//! The binaries must be built first (`make test` does `cargo build --workspace
//! --bins` before `cargo test`); a missing binary fails with that instruction.

pub mod fake_llm;
pub mod fault_llm;
pub mod otlp_collector;
pub mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Path of a workspace binary in the profile directory of the running
/// executable (a test in `target/<profile>/deps/`, or a tool in `target/<profile>/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which `make test` runs)",
        path.display()
    );
    path
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("allocating a free port")
}

/// Every agent a test starts gets its own cgroup parent (agents reap stale
/// session cgroups under theirs at start-up, so two must never share one) and
/// a small warm pool, unless the test chose otherwise.
fn isolated_env(name: &str, env: &HashMap<String, String>) -> HashMap<String, String> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut env = env.clone();
    if name == "rlm-sandbox-agent" {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        env.entry("RLM_AGENT_CGROUP".into())
            .or_insert_with(|| format!("rlm-test-{}-{n}", std::process::id()));
        env.entry("RLM_AGENT_POOL_SIZE".into())
            .or_insert_with(|| "1".into());
    }
    env
}

/// A running binary; killed on drop if the test did not stop it.
pub struct Service {
    pub name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `binary(name)` with exactly `env` (plus PATH) and `args`; stderr goes to a log file in `dir`.
    pub fn start(
        name: &'static str,
        dir: &Path,
        env: &HashMap<String, String>,
        args: &[&str],
    ) -> Self {
        Self::spawn(name, dir, env, args, false)
    }

    /// Like [`Service::start`], but the process gets SIGTERM when the thread
    /// that started it exits (for services shared by a whole test binary).
    pub fn start_dying_with_parent(
        name: &'static str,
        dir: &Path,
        env: &HashMap<String, String>,
        args: &[&str],
    ) -> Self {
        Self::spawn(name, dir, env, args, true)
    }

    fn spawn(
        name: &'static str,
        dir: &Path,
        env: &HashMap<String, String>,
        args: &[&str],
        die_with_parent: bool,
    ) -> Self {
        use std::os::unix::process::CommandExt;
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("creating service log");
        let mut command = Command::new(binary(name));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(isolated_env(name, env))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file);
        if die_with_parent {
            // SAFETY: prctl with scalar arguments is async-signal-safe.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {name}: {err}"));
        Self {
            name,
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("signalling service");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
            .expect("service exits after SIGTERM")
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Gracefully, so an agent destroys its sessions and cgroups.
            if let Some(child) = &self.child {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
            let _ = self.wait_exit(Duration::from_secs(10));
            self.kill();
            if std::thread::panicking() {
                eprintln!("--- {} log ---\n{}", self.name, self.log_text());
            }
        }
    }
}

/// A gRPC channel to `address` (`unix:///path` or `HOST:PORT`).
pub async fn channel(address: &str) -> anyhow::Result<Channel> {
    if let Some(path) = address.strip_prefix("unix://") {
        let path = path.to_owned();
        return Ok(Endpoint::from_static("http://local")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await?);
    }
    let address = address.strip_prefix("tcp://").unwrap_or(address);
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?)
}

/// The health status of `service` ("" = overall).
pub async fn health_status(channel: Channel, service: &str) -> anyhow::Result<ServingStatus> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Polls until `address` answers its overall health check with SERVING.
pub async fn wait_serving(address: &str, service: &Service) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) = channel(address).await
            && let Ok(ServingStatus::Serving) = health_status(channel.clone(), "").await
        {
            return channel;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became SERVING at {address}; log:\n{}",
            service.name,
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An agent and an orchestrator wired together in a temporary directory.
pub struct Stack {
    pub agent: Service,
    pub orchestrator: Service,
    pub agent_address: String,
    pub grpc_address: String,
    pub http_address: String,
    /// Dropped last: the services' logs, printed when a test fails, live here.
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts both services; `extra_env` is added to both (it may override
    /// the short `RLM_SHUTDOWN_ANNOUNCE` of 300 ms the stack uses).
    pub async fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent_address = format!("unix://{}", dir.path().join("run/sandbox.sock").display());
        let grpc_address = format!("127.0.0.1:{}", free_port());
        let http_address = format!("127.0.0.1:{}", free_port());
        let extra: HashMap<String, String> = extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();

        let mut agent_env = extra.clone();
        agent_env.insert("RLM_AGENT_LISTEN".into(), agent_address.clone());
        agent_env.insert(
            "RLM_AGENT_DATA_DIR".into(),
            dir.path().join("agent").display().to_string(),
        );
        agent_env
            .entry("RLM_SHUTDOWN_ANNOUNCE".into())
            .or_insert_with(|| "300ms".into());
        let agent = Service::start("rlm-sandbox-agent", dir.path(), &agent_env, &[]);

        let mut orchestrator_env = extra;
        orchestrator_env.insert("RLM_LISTEN".into(), grpc_address.clone());
        orchestrator_env.insert("RLM_HTTP_LISTEN".into(), http_address.clone());
        orchestrator_env.insert("RLM_SANDBOX_ENDPOINT".into(), agent_address.clone());
        orchestrator_env.insert(
            "RLM_LOG_DIR".into(),
            dir.path().join("trajectories").display().to_string(),
        );
        orchestrator_env
            .entry("RLM_SHUTDOWN_ANNOUNCE".into())
            .or_insert_with(|| "300ms".into());
        let orchestrator = Service::start("rlm-orchestrator", dir.path(), &orchestrator_env, &[]);

        wait_serving(&agent_address, &agent).await;
        wait_serving(&grpc_address, &orchestrator).await;
        Self {
            dir,
            agent,
            orchestrator,
            agent_address,
            grpc_address,
            http_address,
        }
    }

    pub fn agent_socket(&self) -> PathBuf {
        PathBuf::from(self.agent_address.trim_start_matches("unix://"))
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.http_address))
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }
}
