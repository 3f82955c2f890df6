//! Serving gRPC: the common server builder (health, reflection v1 and v1alpha,
//! per-call trace spans) and the shutdown sequence both binaries follow.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::deadline::DeadlineLayer;
use crate::listen::{Address, bind_unix};
use crate::propagation::server_span;

/// The server every RLM binary runs: tonic's, with [`DeadlineLayer`].
pub type RlmServer = tonic::transport::Server<Stack<DeadlineLayer, Identity>>;
/// The router of an [`RlmServer`].
pub type RlmRouter = Router<Stack<DeadlineLayer, Identity>>;

/// A tonic server builder with the settings every RLM server uses.
pub fn builder() -> RlmServer {
    tonic::transport::Server::builder()
        .trace_fn(server_span)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Contexts arrive as 1 MiB messages: with hyper's 1 MiB windows and
        // 16 KiB frames a sender stalls on every WINDOW_UPDATE. The windows
        // only bound what a peer may send ahead; unread data is not copied.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .max_frame_size(Some(256 << 10))
        .layer(DeadlineLayer)
}

/// Adds `grpc.health.v1.Health` and server reflection (v1 and v1alpha) for the
/// given encoded descriptor sets to `server`; returns the router and the
/// reporter that controls health.
pub fn with_standard_services(
    server: &mut RlmServer,
    descriptor_sets: &[&'static [u8]],
) -> anyhow::Result<(RlmRouter, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for set in descriptor_sets {
        v1 = v1.register_encoded_file_descriptor_set(set);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
    }
    let router = server
        .add_service(health)
        .add_service(v1.build_v1().context("building reflection v1")?)
        .add_service(
            v1alpha
                .build_v1alpha()
                .context("building reflection v1alpha")?,
        );
    Ok((router, reporter))
}

/// Serves `router` on `address` until `stop` resolves, then drains.
/// `socket_mode` applies to Unix sockets.
pub async fn serve(
    router: RlmRouter,
    address: &Address,
    socket_mode: u32,
    stop: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    match address {
        Address::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            // serve_with_incoming ignores the builder's TCP settings: without
            // TCP_NODELAY here, replies wait ~40 ms for delayed ACKs.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, stop)
                .await
                .with_context(|| format!("serving gRPC on {address}"))
        }
        Address::Unix(path) => {
            let listener = bind_unix(path, socket_mode).await?;
            let served = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
                .await
                .with_context(|| format!("serving gRPC on {address}"));
            let _ = std::fs::remove_file(path);
            served
        }
    }
}

/// The process-wide shutdown switch, in two steps: `announce` (health turns
/// NOT_SERVING, calls still accepted) then `trigger` (listeners close, drain).
#[derive(Clone)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
    announced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            sender: watch::channel(false).0,
            announced: Default::default(),
        }
    }

    pub fn announce(&self) {
        self.announced
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// True from the announcement on.
    pub fn is_announced(&self) -> bool {
        self.announced.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn trigger(&self) {
        self.announce();
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT. A second one exits the process at
/// once with status 130, for an operator who does not want to wait for the drain.
pub async fn termination_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("second termination signal: exiting without draining");
        std::process::exit(130);
    });
    Ok(name)
}

/// How a server winds down after a termination signal.
#[derive(Debug, Clone, Copy)]
pub struct DrainPolicy {
    /// How long health reports NOT_SERVING while still accepting calls, so load
    /// balancers and probes see it before the listener closes.
    pub announce: Duration,
    /// How long in-flight calls may run after the listener closes.
    pub deadline: Duration,
}

/// Waits for a termination signal, then marks `services` (and the overall
/// status) NOT_SERVING, waits `policy.announce`, and triggers `shutdown`.
pub async fn announce_then_stop(
    reporter: HealthReporter,
    services: &[&str],
    policy: DrainPolicy,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let signal = termination_signal().await?;
    tracing::info!(
        signal,
        announce_ms = policy.announce.as_millis() as u64,
        "shutting down: health now NOT_SERVING"
    );
    shutdown.announce();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for service in services {
        reporter
            .set_service_status(*service, ServingStatus::NotServing)
            .await;
    }
    tokio::time::sleep(policy.announce).await;
    shutdown.trigger();
    Ok(())
}

/// Runs `served` (a server future that returns after draining) but gives up
/// `deadline` after `shutdown` triggers, so one stuck call cannot hold the exit.
pub async fn drain_with_deadline(
    served: impl Future<Output = anyhow::Result<()>>,
    shutdown: &Shutdown,
    deadline: Duration,
) -> anyhow::Result<()> {
    let stopped = shutdown.wait();
    tokio::pin!(served);
    tokio::select! {
        result = &mut served => return result,
        () = stopped => {}
    }
    match tokio::time::timeout(deadline, served).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "drain deadline passed; abandoning in-flight calls"
            );
            Ok(())
        }
    }
}

/// The `main` of an RLM binary: configuration (exit status 2 with the message
/// on error), a multi-threaded runtime, then `run`; failures go to stderr with
/// their context and exit status 1.
pub fn run_main<C, Fut>(
    name: &str,
    config: impl FnOnce() -> Result<C, crate::config::ConfigError>,
    run: impl FnOnce(C) -> Fut,
) -> std::process::ExitCode
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = match config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{name}: configuration error: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
