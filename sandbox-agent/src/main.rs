use std::sync::Arc;

use anyhow::Context;
use rlm_common::server::{self, Shutdown};
use rlm_proto::rlm::sandbox::v1::sandbox_service_server::{SERVICE_NAME, SandboxServiceServer};
use rlm_sandbox_agent::config::Config;
use rlm_sandbox_agent::context_store::ContextStore;
use rlm_sandbox_agent::service::SandboxApi;

fn main() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("rlm-sandbox-agent: configuration error: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rlm-sandbox-agent: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rlm-sandbox-agent: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = rlm_common::telemetry::init("rlm-sandbox-agent", config.service.log_format)?;
    let contexts = ContextStore::open(&config.data_dir.join("contexts"), config.max_context_bytes)
        .with_context(|| {
            format!(
                "opening the context store in {} (RLM_AGENT_DATA_DIR)",
                config.data_dir.display()
            )
        })?;
    let shutdown = Shutdown::new();

    let mut builder = server::builder();
    let (router, reporter) =
        server::with_standard_services(&mut builder, &[rlm_proto::FILE_DESCRIPTOR_SET])?;
    let api = SandboxApi {
        contexts: Arc::new(contexts),
        started_at: std::time::SystemTime::now(),
    };
    let grpc = router.add_service(
        SandboxServiceServer::new(api)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20),
    );
    reporter
        .set_serving::<SandboxServiceServer<SandboxApi>>()
        .await;

    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
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
    tracing::info!("rlm-sandbox-agent stopped");
    telemetry.shutdown().await;
    result.with_context(|| format!("gRPC server on {} (RLM_AGENT_LISTEN)", config.listen))
}
