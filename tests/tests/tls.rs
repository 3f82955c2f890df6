//! Transport security: TLS on the orchestrator's port, mutual TLS between the
//! orchestrator and a TCP agent (plaintext TCP refused unless explicitly
//! allowed), and SO_PEERCRED on the agent's Unix socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rlm_e2e::{Service, channel, free_port, health_status, wait_serving};
use rlm_proto::rlm::sandbox::v1::ListSessionsRequest;
use rlm_proto::rlm::sandbox::v1::sandbox_service_client::SandboxServiceClient;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{CompleteRequest, CompletionSpec, TerminationReason};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;

struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    fn new(dir: &Path) -> Self {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=rlm test CA",
            ],
        );
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).expect("pem")
    }

    fn client_tls(&self, with_identity: bool) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .domain_name("127.0.0.1");
        if with_identity {
            config.identity(Identity::from_pem(
                self.read("client.pem"),
                self.read("client.key"),
            ))
        } else {
            config
        }
    }
}

async fn tls_channel(address: &str, tls: ClientTlsConfig) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?)
}

async fn wait_tls_serving(address: &str, tls: &ClientTlsConfig, service: &Service) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) = tls_channel(address, tls.clone()).await
            && let Ok(ServingStatus::Serving) = health_status(channel.clone(), "").await
        {
            return channel;
        }
        assert!(
            Instant::now() < deadline,
            "{address} never became SERVING over TLS; log:\n{}",
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_tcp_agent_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let base = [
        ("RLM_AGENT_LISTEN", address.clone()),
        (
            "RLM_AGENT_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
    ];
    let mut agent = Service::start("rlm-sandbox-agent", dir.path(), &env(&base), &[]);
    let status = agent
        .wait_exit(Duration::from_secs(20))
        .expect("agent exits");
    assert_eq!(status.code(), Some(2), "log:\n{}", agent.log_text());
    let log = agent.log_text();
    assert!(
        log.contains("RLM_AGENT_TLS_CLIENT_CA") && log.contains("RLM_AGENT_INSECURE_TCP"),
        "{log}"
    );

    let mut insecure = base.to_vec();
    insecure.push(("RLM_AGENT_INSECURE_TCP", "true".to_owned()));
    let agent = Service::start("rlm-sandbox-agent", dir.path(), &env(&insecure), &[]);
    wait_serving(&address, &agent).await;

    // The orchestrator refuses a plaintext TCP agent the same way.
    let mut orchestrator = Service::start(
        "rlm-orchestrator",
        dir.path(),
        &env(&[
            ("RLM_SANDBOX_ENDPOINT", address.clone()),
            ("RLM_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("RLM_HTTP_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("RLM_LOG_DIR", dir.path().join("logs").display().to_string()),
        ]),
        &[],
    );
    let status = orchestrator
        .wait_exit(Duration::from_secs(20))
        .expect("orchestrator exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        orchestrator.log_text().contains("RLM_SANDBOX_TLS_CA"),
        "{}",
        orchestrator.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let agent_port = free_port();
    let agent_address = format!("127.0.0.1:{agent_port}");
    let agent = Service::start(
        "rlm-sandbox-agent",
        dir.path(),
        &env(&[
            ("RLM_AGENT_LISTEN", format!("tcp://{agent_address}")),
            (
                "RLM_AGENT_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("RLM_AGENT_TLS_CERT", pki.path("server.pem")),
            ("RLM_AGENT_TLS_KEY", pki.path("server.key")),
            ("RLM_AGENT_TLS_CLIENT_CA", pki.path("ca.pem")),
        ]),
        &[],
    );
    wait_tls_serving(&agent_address, &pki.client_tls(true), &agent).await;

    // Without a client certificate, or without TLS, the agent is unreachable.
    let anonymous = match tls_channel(&agent_address, pki.client_tls(false)).await {
        Ok(channel) => health_status(channel, "").await.is_err(),
        Err(_) => true,
    };
    assert!(
        anonymous,
        "the agent answered a client without a certificate"
    );
    let plain = match channel(&agent_address).await {
        Ok(channel) => health_status(channel, "").await.is_err(),
        Err(_) => true,
    };
    assert!(plain, "the agent answered plaintext");

    let turns = dir.path().join("turns.txt");
    std::fs::write(&turns, "```repl\nx = 6 * 7\n```\n---\nFINAL_VAR(x)\n").expect("turns");
    let grpc_address = format!("127.0.0.1:{}", free_port());
    let orchestrator = Service::start(
        "rlm-orchestrator",
        dir.path(),
        &env(&[
            ("RLM_SANDBOX_ENDPOINT", format!("tcp://{agent_address}")),
            ("RLM_SANDBOX_TLS_CA", pki.path("ca.pem")),
            ("RLM_SANDBOX_TLS_CERT", pki.path("client.pem")),
            ("RLM_SANDBOX_TLS_KEY", pki.path("client.key")),
            ("RLM_TLS_CERT", pki.path("server.pem")),
            ("RLM_TLS_KEY", pki.path("server.key")),
            ("RLM_LISTEN", grpc_address.clone()),
            ("RLM_HTTP_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("RLM_LOG_DIR", dir.path().join("logs").display().to_string()),
            ("RLM_MODEL", format!("scripted:{}", turns.display())),
        ]),
        &[],
    );
    let secure = wait_tls_serving(&grpc_address, &pki.client_tls(false), &orchestrator).await;
    let plain = match channel(&grpc_address).await {
        Ok(channel) => health_status(channel, "").await.is_err(),
        Err(_) => true,
    };
    assert!(plain, "the orchestrator answered plaintext on its TLS port");

    let result = RlmServiceClient::new(secure)
        .complete(CompleteRequest {
            spec: Some(CompletionSpec {
                prompt: "multiply".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("completion over TLS, through a mutual-TLS agent")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(result.answer, "42", "{result:?}");
    assert_eq!(result.termination_reason(), TerminationReason::Final);
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_callers_are_checked_by_uid() {
    rlm_e2e::sandbox::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let address = format!("unix://{}", dir.path().join("agent.sock").display());
    let agent = Service::start(
        "rlm-sandbox-agent",
        dir.path(),
        &env(&[
            ("RLM_AGENT_LISTEN", address.clone()),
            (
                "RLM_AGENT_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("RLM_AGENT_ALLOWED_UIDS", "4242".to_owned()),
        ]),
        &[],
    );
    // Health stays open (probes); the sandbox API refuses uid 0.
    let ch = wait_serving(&address, &agent).await;
    let refused = SandboxServiceClient::new(ch)
        .list_sessions(ListSessionsRequest::default())
        .await
        .expect_err("uid 0 is not allowed");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("uid 0"), "{refused:?}");
}
