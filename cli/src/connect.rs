//! gRPC channels to the orchestrator and the agent, over TCP or a Unix socket.
//! A service that cannot be reached is a [`Failure`] with exit status 69.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::exit::{Failure, error_chain};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Trajectories can be large; the server sends at most 16 MiB per message.
const MAX_MESSAGE: usize = 64 << 20;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An `http://HOST:PORT` URI.
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    /// Accepts `http://HOST:PORT`, `tcp://HOST:PORT`, `HOST:PORT` and `unix:///PATH`.
    pub fn parse(address: &str) -> Result<Self, Failure> {
        let address = address.trim();
        if let Some(path) = address.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(Failure::invalid(format!(
                    "address {address:?}: a unix socket path must be absolute (unix:///run/rlm/sandbox.sock)"
                )));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if address.starts_with("https://") {
            return Err(Failure::invalid(format!(
                "address {address:?}: TLS is not supported by this build of rlm; use http://"
            )));
        }
        let host_port = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("tcp://"))
            .unwrap_or(address)
            .trim_end_matches('/');
        if host_port.is_empty() || !host_port.contains(':') || host_port.contains('/') {
            return Err(Failure::invalid(format!(
                "address {address:?} is not http://HOST:PORT, HOST:PORT or unix:///PATH"
            )));
        }
        Ok(Self::Tcp(format!("http://{host_port}")))
    }
}

/// Connects to `address`; `what` names the service in error messages.
pub async fn channel(address: &str, what: &str) -> Result<Channel, Failure> {
    let unreachable = |err: &(dyn std::error::Error + 'static)| {
        Failure::unavailable(format!(
            "cannot reach {what} at {address}: {}",
            error_chain(err)
        ))
    };
    match Target::parse(address)? {
        Target::Tcp(uri) => {
            let endpoint = Endpoint::from_shared(uri)
                .map_err(|e| Failure::invalid(format!("address {address:?}: {e}")))?
                .connect_timeout(CONNECT_TIMEOUT);
            endpoint.connect().await.map_err(|e| unreachable(&e))
        }
        Target::Unix(path) => Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(unix_connector(path))
            .await
            .map_err(|e| unreachable(&e)),
    }
}

/// Dials the Unix socket at `path` (the endpoint's URI is then unused).
fn unix_connector(
    path: std::path::PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

/// A channel to `address` that connects on first use (and reconnects after
/// failures), for long-running clients such as `rlm mcp-serve`.
pub fn lazy_channel(address: &str) -> Result<Channel, Failure> {
    match Target::parse(address)? {
        Target::Tcp(uri) => Ok(Endpoint::from_shared(uri)
            .map_err(|e| Failure::invalid(format!("address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy()),
        Target::Unix(path) => Ok(Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector_lazy(unix_connector(path))),
    }
}

/// Adds `authorization: Bearer <key>` to every call when a key is set.
#[derive(Clone)]
pub struct BearerAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerAuth {
    pub fn new(key: Option<&str>) -> Result<Self, Failure> {
        key.map(|k| {
            format!("Bearer {}", k.trim())
                .parse()
                .map_err(|_| Failure::invalid("--api-key / RLM_API_KEY: must be printable ASCII"))
        })
        .transpose()
        .map(Self)
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An `RLMService` client for the orchestrator at `address`.
pub async fn orchestrator(address: &str) -> Result<RlmServiceClient<Channel>, Failure> {
    let channel = channel(address, "the orchestrator")
        .await
        .map_err(|mut f| {
            f.message
                .push_str(" (start it with `rlm up`, or point --addr / RLM_ADDR at it)");
            f
        })?;
    Ok(RlmServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(16 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_forms() {
        assert_eq!(
            Target::parse("http://127.0.0.1:50051").expect("http"),
            Target::Tcp("http://127.0.0.1:50051".into())
        );
        assert_eq!(
            Target::parse("localhost:1").expect("bare"),
            Target::Tcp("http://localhost:1".into())
        );
        assert_eq!(
            Target::parse("tcp://[::1]:7").expect("tcp"),
            Target::Tcp("http://[::1]:7".into())
        );
        assert_eq!(
            Target::parse("unix:///run/rlm/sandbox.sock").expect("unix"),
            Target::Unix("/run/rlm/sandbox.sock".into())
        );
        for bad in ["unix://rel.sock", "https://x:1", "nohost", ""] {
            assert_eq!(Target::parse(bad).expect_err(bad).code, 2, "{bad}");
        }
    }
}
