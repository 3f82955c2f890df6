//! The connection to the sandbox agent (Unix socket or TCP), with trace propagation.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use rlm_common::listen::Address;
use rlm_common::propagation::TracePropagation;
use rlm_proto::rlm::sandbox::v1::GetInfoRequest;
use rlm_proto::rlm::sandbox::v1::sandbox_service_client::SandboxServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub type Sandbox = SandboxServiceClient<InterceptedService<Channel, TracePropagation>>;

/// A lazily connected channel to the agent; reconnects on its own after the agent restarts.
#[derive(Clone)]
pub struct SandboxConnection {
    address: Address,
    channel: Channel,
}

impl SandboxConnection {
    /// A connection to a Unix-socket or plaintext TCP agent.
    pub fn new(address: Address) -> anyhow::Result<Self> {
        Self::with_tls(address, None)
    }

    /// With `tls`, a TCP agent is reached over TLS (mutual TLS when the
    /// config carries a client identity).
    pub fn with_tls(address: Address, tls: Option<ClientTlsConfig>) -> anyhow::Result<Self> {
        let channel = match &address {
            Address::Tcp(addr) => {
                let endpoint = match tls {
                    Some(tls) => {
                        Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?
                    }
                    None => Endpoint::from_shared(format!("http://{addr}"))?,
                };
                endpoint
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy()
            }
            Address::Unix(path) => {
                let path = path.clone();
                // The URI is required by the API but unused: the connector dials the socket.
                Endpoint::from_static("http://sandbox-agent")
                    .connect_timeout(Duration::from_secs(2))
                    .connect_with_connector_lazy(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
            }
        };
        Ok(Self { address, channel })
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    pub fn client(&self) -> Sandbox {
        SandboxServiceClient::with_interceptor(self.channel.clone(), TracePropagation)
            .max_decoding_message_size(64 << 20)
    }

    /// Asks the agent's health service; `Err` carries a reason for `/health`.
    pub async fn check_health(&self, timeout: Duration) -> Result<(), String> {
        let mut health = HealthClient::new(self.channel.clone());
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(timeout);
        rlm_common::propagation::inject_current(request.metadata_mut());
        match tokio::time::timeout(timeout, health.check(request)).await {
            Err(_) => Err(format!(
                "agent at {} did not answer within {timeout:?}",
                self.address
            )),
            Ok(Err(status)) => Err(format!("agent at {}: {}", self.address, status.message())),
            Ok(Ok(response)) => match response.into_inner().status() {
                ServingStatus::Serving => self.check_access(timeout).await,
                other => Err(format!(
                    "agent at {} reports {}",
                    self.address,
                    other.as_str_name()
                )),
            },
        }
    }

    /// Health is open to anyone; the sandbox API checks the caller. A
    /// `GetInfo` shows whether this orchestrator may actually use the agent.
    async fn check_access(&self, timeout: Duration) -> Result<(), String> {
        let mut request = tonic::Request::new(GetInfoRequest::default());
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, self.client().get_info(request)).await {
            Err(_) => Err(format!(
                "agent at {} did not answer GetInfo within {timeout:?}",
                self.address
            )),
            Ok(Err(status)) => Err(format!(
                "agent at {} refuses this orchestrator: {}",
                self.address,
                status.message()
            )),
            Ok(Ok(_)) => Ok(()),
        }
    }
}
