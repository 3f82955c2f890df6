//! `rlm mcp-serve`: the runtime as MCP tools for agents such as Claude
//! Desktop or Claude Code, over stdio (or streamable HTTP on a loopback
//! address). A thin client of the orchestrator's gRPC API (RLMService and
//! SessionService); stdout carries only the protocol, messages go to stderr.

mod params;
mod tools;

use std::net::SocketAddr;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::args::McpServeArgs;
use crate::connect::{self, BearerAuth};
use crate::exit::{self, Failure};

pub async fn run(addr: &str, args: McpServeArgs) -> Result<u8, Failure> {
    let auth = BearerAuth::new(args.api_key.as_deref())?;
    // Lazy: the tools answer with a clear error while the orchestrator is
    // down, and work once it is up, without restarting the MCP client.
    let channel = connect::lazy_channel(addr)?;
    let server = tools::RlmTools::new(addr, channel, auth);
    match args.http {
        Some(listen) => serve_http(listen, server, addr).await,
        None => serve_stdio(server, addr).await,
    }
}

async fn serve_stdio(server: tools::RlmTools, addr: &str) -> Result<u8, Failure> {
    eprintln!("rlm mcp-serve: serving MCP on stdio for the orchestrator at {addr}");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Failure::other(format!("MCP initialisation failed: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| Failure::other(format!("MCP server stopped: {e}")))?;
    Ok(exit::OK)
}

/// Streamable HTTP at `/mcp` until SIGINT / SIGTERM. Only on loopback: the
/// endpoint runs code with this process's API key for whoever reaches it
/// (rmcp also refuses non-loopback `Host` headers, against DNS rebinding).
async fn serve_http(
    listen: SocketAddr,
    server: tools::RlmTools,
    addr: &str,
) -> Result<u8, Failure> {
    if !listen.ip().is_loopback() {
        return Err(Failure::invalid(format!(
            "--http {listen}: only loopback addresses (127.0.0.1:PORT, [::1]:PORT): MCP over HTTP \
             has no authentication of its own; use stdio, or put an authenticating proxy in front"
        )));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let config = StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
    let service: StreamableHttpService<tools::RlmTools, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::other(format!("--http {listen}: {e}")))?;
    eprintln!("rlm mcp-serve: serving MCP at http://{listen}/mcp for the orchestrator at {addr}");
    let shutdown = stop.clone();
    tokio::spawn(async move {
        let _ = rlm_common::server::termination_signal().await;
        shutdown.cancel();
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled_owned().await })
        .await
        .map_err(|e| Failure::other(format!("MCP HTTP server: {e}")))?;
    Ok(exit::OK)
}
