use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rlm_common::server::{self, Shutdown};
use rlm_common::tls;
use rlm_proto::rlm::sandbox::v1::sandbox_service_server::{SERVICE_NAME, SandboxServiceServer};
use rlm_proto::rlm::sandbox::v1::{CgroupVersion, IsolationFeature, IsolationMode};
use rlm_sandbox_agent::config::{Config, IsolationChoice};
use rlm_sandbox_agent::context_store::ContextStore;
use rlm_sandbox_agent::isolation::cgroup::{self, CgroupRoot};
use rlm_sandbox_agent::isolation::uids::UidPool;
use rlm_sandbox_agent::isolation::{preflight, seccomp};
use rlm_sandbox_agent::service::{SandboxApi, StaticInfo};
use rlm_sandbox_agent::session::launcher::{Isolation, Launcher, compile_driver};
use rlm_sandbox_agent::session::limits::{Limits, Policy};
use rlm_sandbox_agent::session::manager::Manager;
use rlm_sandbox_agent::session::pool::Pool;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::UdsConnectInfo;

fn main() -> std::process::ExitCode {
    server::run_main("rlm-sandbox-agent", Config::from_env, run)
}

const FULL_FEATURES: &[IsolationFeature] = &[
    IsolationFeature::MountNamespace,
    IsolationFeature::PidNamespace,
    IsolationFeature::NetworkNamespace,
    IsolationFeature::IpcNamespace,
    IsolationFeature::UtsNamespace,
    IsolationFeature::ReadonlyRoot,
    IsolationFeature::SessionTmpfs,
    IsolationFeature::SessionUid,
    IsolationFeature::CgroupMemory,
    IsolationFeature::CgroupPids,
    IsolationFeature::CgroupCpu,
    IsolationFeature::Rlimits,
    IsolationFeature::Seccomp,
    IsolationFeature::NoNewPrivs,
    IsolationFeature::NoCapabilities,
];

/// Builds the launcher for the configured isolation, refusing to start when
/// full isolation was asked for and cannot be had.
fn build_launcher(config: &Config) -> anyhow::Result<(Launcher, StaticInfo)> {
    let root_mount = config.data_dir.join("session-root");
    std::fs::create_dir_all(&root_mount)
        .with_context(|| format!("creating {}", root_mount.display()))?;
    let scratch_dir = config.data_dir.join("scratch");
    let driver = match compile_driver(&config.python, &config.data_dir.join("driver")) {
        Ok(mut prepared) => {
            prepared.preload.clone_from(&config.preload);
            Some(prepared)
        }
        Err(err) => {
            tracing::warn!("running the REPL driver from source (slower session starts): {err}");
            None
        }
    };
    let python_version = std::process::Command::new(&config.python)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    match config.isolation {
        IsolationChoice::None => {
            std::fs::create_dir_all(&scratch_dir)
                .with_context(|| format!("creating {}", scratch_dir.display()))?;
            let warning = "isolation=none: sessions run as plain child processes of the agent with its privileges; \
                           model-written code can read and change this host. Development only."
                .to_owned();
            tracing::warn!("{warning}");
            Ok((
                Launcher {
                    isolation: Isolation::None,
                    python: config.python.clone(),
                    python_prefix: None,
                    root_mount,
                    scratch_dir,
                    driver: driver.clone(),
                },
                StaticInfo {
                    isolation_mode: IsolationMode::None,
                    features: Vec::new(),
                    cgroup_version: CgroupVersion::None,
                    warnings: vec![warning],
                    python_version,
                },
            ))
        }
        IsolationChoice::Full => {
            let mut missing = preflight::missing(&config.python);
            let cgroups = match CgroupRoot::detect(&config.cgroup) {
                Ok(root) => Some(root),
                Err(err) => {
                    missing.push(format!("cgroups: {err}"));
                    None
                }
            };
            let filter = match seccomp::sandbox_filter() {
                Ok(filter) => Some(filter),
                Err(err) => {
                    missing.push(format!("seccomp filter: {err}"));
                    None
                }
            };
            let (Some(cgroups), Some(filter), true) = (cgroups, filter, missing.is_empty()) else {
                bail!(
                    "cannot isolate sessions on this host; missing:\n  - {}\n(run as root on Linux with cgroups, \
                     or start with --isolation=none for unsafe local development)",
                    missing.join("\n  - ")
                );
            };
            let reaped = cgroups
                .reap_stale()
                .context("reaping session cgroups left by a previous agent")?;
            if reaped > 0 {
                tracing::warn!(reaped, "removed session cgroups left by a previous agent");
            }
            let version = match cgroups.version() {
                cgroup::CgroupVersion::V1 => CgroupVersion::V1,
                cgroup::CgroupVersion::V2 => CgroupVersion::V2,
            };
            let mut warnings = Vec::new();
            if !cgroups.limits_swap() {
                warnings.push(
                    "the kernel does not account swap: memory limits do not cover swap".to_owned(),
                );
            }
            Ok((
                Launcher {
                    isolation: Isolation::Full {
                        cgroups,
                        seccomp: Arc::new(filter),
                        uids: UidPool::new(config.uid_range.0, config.uid_range.1)?,
                    },
                    python: config.python.clone(),
                    python_prefix: preflight::python_prefix(&config.python),
                    root_mount,
                    scratch_dir,
                    driver: driver.clone(),
                },
                StaticInfo {
                    isolation_mode: IsolationMode::Full,
                    features: FULL_FEATURES.to_vec(),
                    cgroup_version: version,
                    warnings,
                    python_version,
                },
            ))
        }
    }
}

/// Over the Unix socket, only the configured uids may call (SO_PEERCRED);
/// over TCP, mutual TLS already authenticated the peer.
fn peer_allowed(
    request: tonic::Request<()>,
    allowed: &[u32],
) -> Result<tonic::Request<()>, tonic::Status> {
    let Some(info) = request.extensions().get::<UdsConnectInfo>() else {
        return Ok(request);
    };
    match info.peer_cred.map(|c| c.uid()) {
        Some(uid) if allowed.contains(&uid) => Ok(request),
        Some(uid) => {
            tracing::warn!(
                uid,
                "refused a caller whose uid is not in RLM_AGENT_ALLOWED_UIDS"
            );
            Err(tonic::Status::permission_denied(format!(
                "uid {uid} may not use this agent (RLM_AGENT_ALLOWED_UIDS)"
            )))
        }
        None => Err(tonic::Status::permission_denied(
            "the caller's credentials are unknown",
        )),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = rlm_common::telemetry::init("rlm-sandbox-agent", config.service.log_format)?;
    let contexts = Arc::new(
        ContextStore::open(&config.data_dir.join("contexts"), config.max_context_bytes)
            .with_context(|| {
                format!(
                    "opening the context store in {} (RLM_AGENT_DATA_DIR)",
                    config.data_dir.display()
                )
            })?,
    );
    let (launcher, info) = build_launcher(&config)?;
    let launcher = Arc::new(launcher);
    let mut pools = vec![Pool::new(Limits::default().profile(), config.pool_size)];
    for (profile, size) in &config.pool_profiles {
        pools.push(Pool::new(profile.clone(), *size));
    }
    let manager = Manager::new(
        launcher.clone(),
        pools.clone(),
        contexts.clone(),
        config.max_sessions,
    );
    let shutdown = Shutdown::new();

    let pool_tasks: Vec<_> = pools
        .iter()
        .map(|pool| tokio::spawn(pool.clone().run(launcher.clone(), shutdown.wait())))
        .collect();
    let expiry_task = tokio::spawn({
        let manager = manager.clone();
        let stop = shutdown.wait();
        async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => { manager.expire().await; }
                    () = &mut stop => return,
                }
            }
        }
    });

    let mut builder = server::builder();
    if let Some(files) = &config.tls {
        builder = builder
            .tls_config(tls::server_config(files).context("mutual TLS (RLM_AGENT_TLS_*)")?)
            .context("mutual TLS (RLM_AGENT_TLS_*)")?;
    }
    let (router, reporter) =
        server::with_standard_services(&mut builder, &[rlm_proto::FILE_DESCRIPTOR_SET])?;
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let api = SandboxApi {
        contexts,
        manager: manager.clone(),
        policy: Policy {
            host_cpus,
            allow_network: config.allow_network,
            allowed_path_prefixes: config.allowed_path_prefixes.clone(),
        },
        info: info.clone(),
        started_at: std::time::SystemTime::now(),
    };
    let allowed_uids = config.allowed_uids.clone();
    let grpc = router.add_service(InterceptedService::new(
        SandboxServiceServer::new(api)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20),
        move |request: tonic::Request<()>| peer_allowed(request, &allowed_uids),
    ));
    reporter
        .set_serving::<SandboxServiceServer<SandboxApi>>()
        .await;

    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        isolation = ?info.isolation_mode,
        pool_size = config.pool_size,
        tracing = telemetry.exporting(),
        version = rlm_common::VERSION,
        "rlm-sandbox-agent serving"
    );
    tokio::spawn({
        let shutdown = shutdown.clone();
        let drain = config.service.drain;
        async move {
            if let Err(err) =
                server::announce_then_stop(reporter, &[SERVICE_NAME], drain, shutdown.clone()).await
            {
                tracing::error!("{err:#}");
                shutdown.trigger();
            }
        }
    });
    let served = server::serve(grpc, &config.listen, config.socket_mode, shutdown.wait());
    let result =
        server::drain_with_deadline(served, &shutdown, config.service.drain.deadline).await;
    expiry_task.abort();
    manager.destroy_all().await;
    for task in pool_tasks {
        let _ = task.await;
    }
    launcher.remove_cgroup_parents();
    tracing::info!("rlm-sandbox-agent stopped");
    telemetry.shutdown().await;
    result.with_context(|| format!("gRPC server on {} (RLM_AGENT_LISTEN)", config.listen))
}
