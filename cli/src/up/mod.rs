//! `rlm up`: the sandbox agent and the orchestrator on this machine, in the
//! foreground, wired the way `scripts/up.sh` wires them (state under
//! `./.rlm`, unless the RLM_* variables say otherwise). Ctrl-C stops both:
//! the orchestrator first (it drains), then the agent.

mod child;
mod locate;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::args::{Isolation, UpArgs};
use crate::connect;
use crate::exit::{self, Failure};
use child::Service;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The orchestrator drains in-flight calls for up to 30 s by default.
const ORCHESTRATOR_GRACE: Duration = Duration::from_secs(40);
const AGENT_GRACE: Duration = Duration::from_secs(20);

/// Where everything goes, resolved from the flags and the environment.
struct Layout {
    state: PathBuf,
    agent_listen: String,
    sandbox_endpoint: String,
    grpc_listen: String,
    http_listen: String,
    agent_env: Vec<(String, String)>,
    orchestrator_env: Vec<(String, String)>,
}

fn env_or(name: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(default)
}

fn layout(args: &UpArgs) -> Result<Layout, Failure> {
    let state = std::path::absolute(&args.state_dir)
        .map_err(|e| Failure::invalid(format!("--state-dir {}: {e}", args.state_dir)))?;
    std::fs::create_dir_all(&state)
        .map_err(|e| Failure::other(format!("creating {}: {e}", state.display())))?;
    let agent_listen = env_or("RLM_AGENT_LISTEN", || {
        format!("unix://{}", state.join("run/sandbox.sock").display())
    });
    let sandbox_endpoint = env_or("RLM_SANDBOX_ENDPOINT", || agent_listen.clone());
    let isolation = match args.isolation {
        Isolation::Full => "full",
        Isolation::None => "none",
    };
    let agent_env = vec![
        ("RLM_AGENT_LISTEN".to_owned(), agent_listen.clone()),
        (
            "RLM_AGENT_DATA_DIR".to_owned(),
            env_or("RLM_AGENT_DATA_DIR", || {
                state.join("agent").display().to_string()
            }),
        ),
        ("RLM_AGENT_ISOLATION".to_owned(), isolation.to_owned()),
    ];
    let mut orchestrator_env = vec![
        ("RLM_SANDBOX_ENDPOINT".to_owned(), sandbox_endpoint.clone()),
        (
            "RLM_LOG_DIR".to_owned(),
            env_or("RLM_LOG_DIR", || {
                state.join("trajectories").display().to_string()
            }),
        ),
    ];
    if let Some(model) = &args.model {
        orchestrator_env.push(("RLM_MODEL".to_owned(), model.clone()));
    }
    if let Some(model) = &args.sub_model {
        orchestrator_env.push(("RLM_SUB_MODEL".to_owned(), model.clone()));
    }
    Ok(Layout {
        state,
        agent_listen,
        sandbox_endpoint,
        grpc_listen: env_or("RLM_LISTEN", || "127.0.0.1:50051".to_owned()),
        http_listen: env_or("RLM_HTTP_LISTEN", || "127.0.0.1:9464".to_owned()),
        agent_env,
        orchestrator_env,
    })
}

/// Refuses to start the isolated agent without root, with what to do instead.
fn check_privileges(isolation: Isolation) -> Result<(), Failure> {
    if isolation == Isolation::Full && !nix::unistd::geteuid().is_root() {
        return Err(Failure::other(
            "the sandbox agent isolates sessions with namespaces, cgroups and seccomp, which needs root.\n  \
             Run `sudo rlm up`, or `rlm up --isolation none` (RLM_AGENT_ISOLATION=none) for unprivileged development:\n  \
             UNSAFE, model-written code then runs as you, unconfined.",
        ));
    }
    if isolation == Isolation::None {
        eprintln!(
            "rlm up: WARNING: --isolation none: sessions are plain child processes of the agent with its \
             privileges; model-written code can read and change this machine. Development only."
        );
    }
    Ok(())
}

/// Fails early when something already listens where the orchestrator will.
fn check_free(address: &str, variable: &str) -> Result<(), Failure> {
    let addr = rlm_common::listen::Address::parse_tcp(address)
        .map_err(|e| Failure::invalid(format!("{variable}={address}: {e}")))?;
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| {
        Failure::other(format!(
            "{address} is not free ({e}): another orchestrator running? stop it, or set {variable}"
        ))
    })
}

/// Polls the gRPC health of `address` until SERVING, or until `service` exits.
async fn wait_serving(address: &str, service: &mut Service) -> Result<(), Failure> {
    let address = if address.starts_with("unix://") || address.contains("://") {
        address.replace("tcp://", "http://")
    } else {
        format!("http://{address}")
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = service.try_wait() {
            return Err(Failure::other(format!(
                "{} exited during start-up ({status}); see its log above",
                service.name
            )));
        }
        if let Ok(channel) = connect::channel(&address, service.name).await {
            let mut client = HealthClient::new(channel);
            let check = client.check(HealthCheckRequest::default());
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), check).await
                && r.get_ref().status() == ServingStatus::Serving
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::other(format!(
                "{} did not become SERVING at {address} within {READY_TIMEOUT:?}",
                service.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn banner(l: &Layout, isolation: Isolation) {
    let log_dir = l
        .orchestrator_env
        .iter()
        .find(|(k, _)| k == "RLM_LOG_DIR")
        .map_or("", |(_, v)| v.as_str());
    eprintln!(
        "rlm up: ready: orchestrator gRPC {}, metrics and health on http://{}, agent {} (isolation {})",
        l.grpc_listen,
        l.http_listen,
        l.agent_listen,
        match isolation {
            Isolation::Full => "full",
            Isolation::None => "NONE",
        }
    );
    eprintln!(
        "rlm up: state in {}, trajectories in {log_dir}; Ctrl-C stops both",
        l.state.display()
    );
    eprintln!("rlm up: try `rlm doctor`, `rlm run \"...\" --model PROVIDER/MODEL`, `rlm logs`");
}

pub async fn run(args: UpArgs) -> Result<u8, Failure> {
    check_privileges(args.isolation)?;
    let l = layout(&args)?;
    check_free(&l.grpc_listen, "RLM_LISTEN")?;
    check_free(&l.http_listen, "RLM_HTTP_LISTEN")?;
    let agent_bin = locate::binary("rlm-sandbox-agent")?;
    let orchestrator_bin = locate::binary("rlm-orchestrator")?;
    let mut signals = Signals::new()?;

    let mut agent = Service::start("agent", &agent_bin, &l.agent_env, 36)?;
    let ready = tokio::select! {
        r = wait_serving(&l.sandbox_endpoint, &mut agent) => r,
        _ = signals.next() => Err(Failure::other("interrupted during start-up")),
    };
    if let Err(f) = ready {
        agent.stop(AGENT_GRACE).await;
        return Err(f);
    }
    let mut orchestrator =
        Service::start("orchestrator", &orchestrator_bin, &l.orchestrator_env, 35)?;
    let ready = tokio::select! {
        r = wait_serving(&l.grpc_listen, &mut orchestrator) => r,
        _ = signals.next() => Err(Failure::other("interrupted during start-up")),
    };
    if let Err(f) = ready {
        orchestrator.stop(ORCHESTRATOR_GRACE).await;
        agent.stop(AGENT_GRACE).await;
        return Err(f);
    }
    banner(&l, args.isolation);

    let outcome = tokio::select! {
        _ = signals.next() => None,
        status = agent.wait() => Some(("agent", status)),
        status = orchestrator.wait() => Some(("orchestrator", status)),
    };
    eprintln!("rlm up: stopping (Ctrl-C again to kill at once)");
    let stopping = async {
        orchestrator.stop(ORCHESTRATOR_GRACE).await;
        agent.stop(AGENT_GRACE).await;
    };
    tokio::select! {
        () = stopping => {}
        _ = signals.next() => {
            eprintln!("rlm up: killing both services");
            // kill_on_drop does the rest when the services are dropped.
        }
    }
    match outcome {
        None => Ok(exit::OK),
        Some((name, status)) => Err(Failure::other(format!(
            "{name} exited unexpectedly ({}); see its log above",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        ))),
    }
}

/// SIGINT, SIGTERM and SIGHUP, as one stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, Failure> {
        let install = |kind| signal(kind).map_err(|e| Failure::other(format!("signals: {e}")));
        Ok(Self {
            int: install(SignalKind::interrupt())?,
            term: install(SignalKind::terminate())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}
