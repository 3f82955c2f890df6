use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;

use anyhow::Context;
use rlm_common::server::{self, Shutdown};
use rlm_common::tls;
use rlm_orchestrator::auth::ApiKeys;
use rlm_orchestrator::config::{AgentTransport, Config};
use rlm_orchestrator::direct_sessions::{DirectSessions, SessionApi};
use rlm_orchestrator::engine::{Engine, EngineConfig};
use rlm_orchestrator::health::HealthChecks;
use rlm_orchestrator::http::{HttpState, router};
use rlm_orchestrator::metrics::Metrics;
use rlm_orchestrator::model::Models;
use rlm_orchestrator::queue::Queue;
use rlm_orchestrator::sandbox_client::SandboxConnection;
use rlm_orchestrator::service::RlmApi;
use rlm_orchestrator::trajectory::TrajectoryStore;
use rlm_orchestrator::viewer::Viewer;
use rlm_proto::rlm::v1::rlm_service_server::{RlmServiceServer, SERVICE_NAME};
use rlm_proto::rlm::v1::session_service_server::{
    SERVICE_NAME as SESSION_SERVICE_NAME, SessionServiceServer,
};

fn main() -> std::process::ExitCode {
    server::run_main("rlm-orchestrator", Config::from_env, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = rlm_common::telemetry::init("rlm-orchestrator", config.service.log_format)?;
    let metrics = Arc::new(Metrics::new(config.model.as_deref()));
    let agent_tls = match &config.agent_transport {
        AgentTransport::Plain => None,
        AgentTransport::Tls {
            ca,
            client,
            server_name,
        } => Some(
            tls::client_config(
                ca,
                client.as_ref().map(|c| (c.cert.as_path(), c.key.as_path())),
                server_name,
            )
            .context("TLS towards the agent (RLM_SANDBOX_TLS_*)")?,
        ),
    };
    let sandbox = SandboxConnection::with_tls(config.sandbox_endpoint.clone(), agent_tls)
        .with_context(|| format!("sandbox endpoint {}", config.sandbox_endpoint))?;
    let shutdown = Shutdown::new();

    let mut builder = server::builder();
    if let Some(files) = &config.tls {
        builder = builder
            .tls_config(tls::server_config(files).context("TLS on the gRPC port (RLM_TLS_*)")?)
            .context("TLS on the gRPC port (RLM_TLS_*)")?;
    }
    let (router_with_std, reporter) =
        server::with_standard_services(&mut builder, &[rlm_proto::FILE_DESCRIPTOR_SET])?;
    let store = TrajectoryStore::open_location(&config.trajectory_store)
        .with_context(|| {
            format!(
                "trajectory store {} (RLM_TRAJECTORY_STORE, else RLM_LOG_DIR)",
                config.trajectory_store
            )
        })?
        .on_write_error({
            let metrics = metrics.clone();
            move || metrics.count_error("trajectory_write")
        });
    tracing::info!(store = %config.trajectory_store, "trajectory store");
    // The viewer reads the same store (a clone shares which ids are running).
    let trajectories = store.clone();
    let models = Models::new(config.models.clone()).context("model clients")?;
    let engine = Engine::new(EngineConfig {
        models,
        sandbox: sandbox.clone(),
        metrics: metrics.clone(),
        store,
        root_model: config.model.clone(),
        sub_model: config.sub_model.clone(),
        limits: config.limits.clone(),
        max_completions: config.max_completions,
    });
    let queue = Queue::start(config.queue.clone(), engine.clone(), metrics.clone())
        .await
        .context("the completion queue (RLM_QUEUE_*)")?;
    let api = RlmApi {
        queue: queue.clone(),
        engine: engine.clone(),
        per_key_limit: config.api_key_max_concurrent,
        sandbox: sandbox.clone(),
        metrics: metrics.clone(),
    };
    let keys = ApiKeys::load(
        config.api_keys.0.as_deref(),
        config.api_keys_file.as_deref(),
        config.api_key_max_concurrent,
    )
    .context("API keys (RLM_API_KEYS / RLM_API_KEYS_FILE)")?;
    match &keys {
        Some(keys) => keys.spawn_reloader(),
        None => tracing::warn!(
            "no API keys configured (RLM_API_KEYS_FILE): every client that reaches the gRPC port may run completions"
        ),
    }
    let viewer = Viewer::new(trajectories.clone(), keys.clone());
    let sessions = DirectSessions::new(engine.shared().clone(), config.sessions.clone());
    sessions.spawn_reaper();
    let session_keys = keys.clone();
    let grpc = router_with_std
        .add_service(InterceptedService::new(
            RlmServiceServer::new(api)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
            move |request| match &keys {
                Some(keys) => keys.authenticate(request),
                None => Ok(request),
            },
        ))
        .add_service(InterceptedService::new(
            SessionServiceServer::new(SessionApi {
                sessions: sessions.clone(),
                metrics: metrics.clone(),
            })
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20),
            move |request| match &session_keys {
                Some(keys) => keys.authenticate(request),
                None => Ok(request),
            },
        ));
    reporter.set_serving::<RlmServiceServer<RlmApi>>().await;
    reporter
        .set_serving::<SessionServiceServer<SessionApi>>()
        .await;

    let http_state = HttpState {
        metrics,
        health: Arc::new(HealthChecks {
            sandbox,
            storage: trajectories.clone(),
            model: config.model.clone(),
            llm_base_url: config.llm_base_url.clone(),
            http: reqwest::Client::builder()
                .user_agent(concat!("rlm-orchestrator/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("building the HTTP client")?,
        }),
        shutdown: shutdown.clone(),
        viewer,
    };
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| {
            format!(
                "binding HTTP listener {} (RLM_HTTP_LISTEN)",
                config.http_listen
            )
        })?;
    let http_stop = shutdown.wait();
    let http = tokio::spawn(async move {
        axum::serve(http_listener, router(http_state))
            .with_graceful_shutdown(http_stop)
            .await
    });

    tracing::info!(
        grpc = %config.listen,
        http = %config.http_listen,
        sandbox = %config.sandbox_endpoint,
        tracing = telemetry.exporting(),
        version = rlm_common::VERSION,
        "rlm-orchestrator serving"
    );
    tokio::spawn({
        let shutdown = shutdown.clone();
        let drain = config.service.drain;
        async move {
            if let Err(err) = server::announce_then_stop(
                reporter,
                &[SERVICE_NAME, SESSION_SERVICE_NAME],
                drain,
                shutdown.clone(),
            )
            .await
            {
                tracing::error!("{err:#}");
                shutdown.trigger();
            }
        }
    });
    let listen = rlm_common::listen::Address::Tcp(config.listen);
    let served = server::serve(grpc, &listen, 0o600, shutdown.wait());
    let result =
        server::drain_with_deadline(served, &shutdown, config.service.drain.deadline).await;
    // Queued completions are cancelled (embedded) or left in Redis and the
    // running ones handed back (fleet) before the engine stops.
    queue.shutdown().await;
    // Completions still running after the drain are cancelled and their
    // sessions destroyed before the process exits.
    engine.shutdown(std::time::Duration::from_secs(10)).await;
    // Their last segments are stored already; this lets the uploads that
    // consolidate them end too.
    if !trajectories.drain(std::time::Duration::from_secs(10)).await {
        tracing::warn!("some trajectory uploads did not end in time");
    }
    sessions.shutdown(std::time::Duration::from_secs(10)).await;
    http.abort();
    tracing::info!("rlm-orchestrator stopped");
    telemetry.shutdown().await;
    result.with_context(|| format!("gRPC server on {} (RLM_LISTEN)", config.listen))
}
