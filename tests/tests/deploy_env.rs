//! The deployment files against the real binaries, so they cannot drift from
//! what the binaries accept.
//!
//! `deploy/tools/manifests.py` (PyYAML) extracts what `deploy/compose.yaml`,
//! the Kubernetes Deployment in `deploy/k8s/` and the images' Dockerfiles
//! (`ENV`, `HEALTHCHECK`) give each container. The tests then start
//! `rlm-sandbox-agent` and `rlm-orchestrator` with exactly those environments —
//! only what cannot exist on a test host is swapped: listen addresses for free
//! loopback ports, the container paths of volumes (`/run/rlm`, ...) for a
//! temporary directory, the model API and the OTLP collector for local stand-ins,
//! the agent's host-wide cgroup name for a unique one, and Secrets for
//! stand-ins — and check that both serve, that the health checks and probes
//! the manifests declare pass, that a completion runs code in a fully isolated
//! session, and that the API refuses callers without a key where the
//! manifests turn authentication on. A mistyped value
//! stops a binary with exit status 2; a mistyped *name* is ignored by the
//! binaries, so every variable must also be one the README documents.
//!
//! The last test runs the agent the way the manifests confine it: uid 0 with
//! gid 65532, exactly the capabilities they grant (`setpriv`), under
//! `deploy/docker/sandbox-agent-seccomp.json` (`deploy/tools/confine.py`),
//! through the image's entrypoint; and the orchestrator as uid/gid 65532 with
//! no capabilities, reaching the agent through the group-shared socket. Then
//! it drops each granted capability in turn and shows the agent can no longer
//! run a session without it.
//!
//! The DaemonSet + mutual TLS variant (`deploy/k8s` with
//! `components/daemonset-mtls`) gets the same treatment: both binaries with
//! exactly its environments -- the Service variables the kubelet injects and
//! its `$(...)` expansion emulated, a throwaway CA's certificates (`openssl`)
//! written where its Secrets are mounted, with the kubelet's owners and modes --
//! the agent confined as its DaemonSet grants, the orchestrator as its uid with
//! the pod's fsGroup; every probe passes and a completion runs over mutual TLS.
//!
//! Needs root (the agent's isolation), `openssl`, and python3 with PyYAML:
//! `deploy/.venv` (made by `deploy/check.sh`) when present, else the system's
//! `python3`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rlm_e2e::sandbox::{CellStream, Sandbox, require_root};
use rlm_e2e::{Service, binary, channel, free_port, health_status, wait_serving};
use rlm_proto::rlm::sandbox::v1::{
    CreateSessionRequest, DestroySessionRequest, GetInfoRequest, IsolationMode,
};
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{
    CompleteRequest, CompletionSpec, ListTrajectoriesRequest, TerminationReason,
};
use serde_json::Value;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;

const AGENT: &str = "rlm-sandbox-agent";
const ORCHESTRATOR: &str = "rlm-orchestrator";
/// uid and gid of the orchestrator, group of the agent (the socket's group).
const SHARED_ID: u32 = 65532;
/// The client key in the stand-in of every Secret-provided file (the API key
/// list, `label:key` per line).
const TEST_API_KEY: &str = "deploy-test-key-0123456789abcdef";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `deploy/.venv/bin/python` when `deploy/check.sh` made it, else `python3`.
fn python() -> PathBuf {
    let venv = repo().join("deploy/.venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The output of `deploy/tools/manifests.py`.
fn manifests() -> Value {
    let output = Command::new(python())
        .arg(repo().join("deploy/tools/manifests.py"))
        .stdin(Stdio::null())
        .output()
        .expect("running deploy/tools/manifests.py (python3)");
    assert!(
        output.status.success(),
        "deploy/tools/manifests.py failed (it needs PyYAML: run deploy/check.sh, which makes deploy/.venv):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("manifests.py prints JSON")
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One container as a deployment file defines it.
#[derive(Debug, Clone)]
struct ContainerSpec {
    /// Image `ENV` overlaid with the manifest's environment (and, for
    /// Kubernetes, a stand-in value for every secretKeyRef).
    env: BTreeMap<String, String>,
    /// Health check / probe commands (`rlm doctor ...`).
    exec_checks: Vec<Vec<String>>,
    /// gRPC probe services ("" = overall).
    grpc_probes: Vec<String>,
    /// Container paths of files mounted from Secrets.
    secret_files: Vec<String>,
}

/// (agent, orchestrator) of compose.yaml, plus the container paths of its volumes.
fn compose_containers(m: &Value) -> (ContainerSpec, ContainerSpec, Vec<String>) {
    let services = &m["compose"]["services"];
    let container = |name: &str| {
        let service = &services[name];
        let mut env = string_map(&service["image_facts"]["env"]);
        env.extend(string_map(&service["environment"]));
        ContainerSpec {
            env,
            exec_checks: vec![strings(&service["healthcheck"])],
            grpc_probes: Vec::new(),
            secret_files: Vec::new(),
        }
    };
    let mut mounts = BTreeSet::new();
    for name in ["sandbox-agent", "orchestrator"] {
        for volume in strings(&services[name]["volumes"]) {
            let target = volume.split(':').nth(1).expect("volume NAME:TARGET");
            mounts.insert(target.to_owned());
        }
    }
    (
        container("sandbox-agent"),
        container("orchestrator"),
        mounts.into_iter().collect(),
    )
}

/// (agent, orchestrator) of the Kubernetes Deployment, plus its mount paths.
fn kubernetes_containers(m: &Value) -> (ContainerSpec, ContainerSpec, Vec<String>) {
    let containers = &m["kubernetes"]["containers"];
    let mut mounts = BTreeSet::new();
    let container = |name: &str, mounts: &mut BTreeSet<String>| {
        let c = &containers[name];
        let mut env = string_map(&c["image_facts"]["env"]);
        env.extend(string_map(&c["environment"]));
        for key in string_map(&c["secrets"]).keys() {
            env.insert(key.clone(), format!("test-value-of-{key}"));
        }
        let mut exec_checks = Vec::new();
        let mut grpc_probes = Vec::new();
        for probe in c["probes"].as_object().expect("probes").values() {
            if let Some(command) = probe.get("exec").map(|e| strings(&e["command"])) {
                exec_checks.push(command);
            }
            if let Some(grpc) = probe.get("grpc") {
                grpc_probes.push(grpc["service"].as_str().unwrap_or_default().to_owned());
            }
        }
        exec_checks.dedup();
        let mut secret_files = Vec::new();
        for (path, mount) in c["mounts"].as_object().expect("mounts") {
            mounts.insert(path.clone());
            let volume = &m["kubernetes"]["pod"]["volumes"][mount["name"].as_str().expect("name")];
            if let Some(secret) = volume.get("secret") {
                for item in secret["items"]
                    .as_array()
                    .expect("Secret volumes list their items")
                {
                    secret_files.push(format!("{path}/{}", item["path"].as_str().expect("path")));
                }
            }
        }
        ContainerSpec {
            env,
            exec_checks,
            grpc_probes,
            secret_files,
        }
    };
    let agent = container("sandbox-agent", &mut mounts);
    let orchestrator = container("orchestrator", &mut mounts);
    (agent, orchestrator, mounts.into_iter().collect())
}

/// Where a test stack runs and what replaces the addresses and paths of a container.
struct Host {
    root: PathBuf,
    mounts: Vec<String>,
    grpc: String,
    http: String,
    model_api: String,
    otlp: Option<String>,
    cgroup: String,
}

static CGROUP_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Host {
    fn new(root: &Path, mounts: Vec<String>, model_api: String, otlp: Option<String>) -> Self {
        for mount in &mounts {
            std::fs::create_dir_all(root.join(mount.trim_start_matches('/')))
                .expect("creating a volume's directory");
        }
        let n = CGROUP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            root: root.to_path_buf(),
            mounts,
            grpc: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            model_api,
            otlp,
            cgroup: format!("rlm-deploy-{}-{n}", std::process::id()),
        }
    }

    /// `env` with only addresses, volume paths and host-wide names swapped.
    fn swap(&self, env: &BTreeMap<String, String>) -> HashMap<String, String> {
        let mut swapped = HashMap::new();
        for (key, value) in env {
            let new = match key.as_str() {
                "RLM_LISTEN" | "RLM_HTTP_LISTEN" => {
                    assert!(
                        value.starts_with("0.0.0.0:"),
                        "{key}={value}: a container must listen on all interfaces"
                    );
                    if key == "RLM_LISTEN" {
                        self.grpc.clone()
                    } else {
                        self.http.clone()
                    }
                }
                "RLM_LLM_BASE_URL" => {
                    assert!(value.starts_with("https://"), "{key}={value}");
                    self.model_api.clone()
                }
                "OTEL_EXPORTER_OTLP_ENDPOINT" if !value.is_empty() => self
                    .otlp
                    .clone()
                    .unwrap_or_else(|| format!("http://127.0.0.1:{}", free_port())),
                "RLM_AGENT_CGROUP" => self.cgroup.clone(),
                _ => self.relocate(value),
            };
            swapped.insert(key.clone(), new);
        }
        swapped
    }

    /// Stand-ins for the files a container gets from Secrets.
    fn write_secret_files(&self, spec: &ContainerSpec) {
        for file in &spec.secret_files {
            let path = self.root.join(file.trim_start_matches('/'));
            std::fs::write(&path, format!("deploy-test:{TEST_API_KEY}\n"))
                .expect("writing a Secret stand-in");
        }
    }

    /// A container path under one of the volumes, moved under the test's root.
    fn relocate(&self, value: &str) -> String {
        let (scheme, path) = match value.strip_prefix("unix://") {
            Some(path) => ("unix://", path),
            None => ("", value),
        };
        for mount in &self.mounts {
            if path == mount || path.starts_with(&format!("{mount}/")) {
                return format!(
                    "{scheme}{}",
                    self.root.join(path.trim_start_matches('/')).display()
                );
            }
        }
        value.to_owned()
    }

    /// What a health check inside the container reaches as 127.0.0.1:<port>.
    fn doctor_env(&self, env: &HashMap<String, String>) -> HashMap<String, String> {
        let mut env = env.clone();
        env.insert("RLM_ADDR".into(), format!("http://{}", self.grpc));
        env.insert("RLM_HTTP_ADDR".into(), format!("http://{}", self.http));
        env
    }
}

/// An OpenAI-compatible API stand-in for `/health`'s reachability check: it
/// answers everything with 401, which is what the real API says to a probe
/// without a valid key (reachable).
async fn model_api_stub() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind model API stub");
    let address = listener.local_addr().expect("stub address");
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::UNAUTHORIZED });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/v1")
}

/// Runs a health-check or probe command (`rlm ...`), with `rlm` from the build.
fn run_check(argv: &[String], env: &HashMap<String, String>, wrapper: &[String]) -> String {
    assert_eq!(
        argv.first().map(String::as_str),
        Some("rlm"),
        "health checks use the rlm CLI: {argv:?}"
    );
    let rlm = binary("rlm");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&rlm);
            command
        }
        None => Command::new(&rlm),
    };
    let output = command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("running rlm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "health check {argv:?} failed ({}):\n{text}",
        output.status
    );
    text
}

fn turns_file(dir: &Path) -> PathBuf {
    let path = dir.join("turns.txt");
    std::fs::write(
        &path,
        "```repl\nimport os\nanswer = \"%d uid=%d\" % (6 * 7, os.getuid())\nFINAL(answer)\n```\n",
    )
    .expect("writing the scripted turns");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

/// One completion through the orchestrator with the scripted model: the code
/// runs in a sandbox session; returns the uid it ran as.
async fn complete_in_sandbox(grpc: &str, turns: &Path) -> u32 {
    let mut client = RlmServiceClient::new(channel(grpc).await.expect("connect orchestrator"));
    let mut request = tonic::Request::new(CompleteRequest {
        spec: Some(CompletionSpec {
            prompt: "What is 6 * 7?".into(),
            root_model: format!("scripted:{}", turns.display()),
            ..Default::default()
        }),
    });
    // Ignored where the manifests turn authentication off.
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TEST_API_KEY}").parse().expect("ascii"),
    );
    let result = tokio::time::timeout(Duration::from_secs(60), client.complete(request))
        .await
        .expect("Complete within 60 s")
        .expect("Complete")
        .into_inner()
        .result
        .expect("a result");
    assert_eq!(
        result.termination_reason(),
        TerminationReason::Final,
        "{result:?}"
    );
    let (answer, uid) = result
        .answer
        .split_once(" uid=")
        .expect("answer `42 uid=N`");
    assert_eq!(answer, "42");
    let uid: u32 = uid.parse().expect("uid");
    assert!(
        uid >= 200_000,
        "model code ran as uid {uid}, not a session uid"
    );
    uid
}

async fn http_health(http: &str) -> Value {
    let body = reqwest::get(format!("http://{http}/health"))
        .await
        .expect("GET /health")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).expect("/health JSON")
}

async fn assert_health_probes(grpc: &str, services: &[String]) {
    let channel = channel(grpc).await.expect("connect");
    for service in services {
        assert_eq!(
            health_status(channel.clone(), service)
                .await
                .expect("health check"),
            ServingStatus::Serving,
            "gRPC probe service {service:?}"
        );
    }
}

/// Starts both binaries with the given container specs; checks health, the
/// declared probes and health checks, and one completion.
async fn run_stack(agent_spec: &ContainerSpec, orchestrator_spec: &ContainerSpec, host: &Host) {
    let agent_env = host.swap(&agent_spec.env);
    let orchestrator_env = host.swap(&orchestrator_spec.env);
    host.write_secret_files(agent_spec);
    host.write_secret_files(orchestrator_spec);
    let agent_address = agent_env["RLM_AGENT_LISTEN"].clone();
    assert_eq!(
        orchestrator_env["RLM_SANDBOX_ENDPOINT"], agent_address,
        "the orchestrator's RLM_SANDBOX_ENDPOINT is the agent's RLM_AGENT_LISTEN"
    );

    let agent = Service::start(AGENT, &host.root, &agent_env, &[]);
    wait_serving(&agent_address, &agent).await;
    let orchestrator = Service::start(ORCHESTRATOR, &host.root, &orchestrator_env, &[]);
    wait_serving(&host.grpc, &orchestrator).await;

    assert_health_probes(&host.grpc, &orchestrator_spec.grpc_probes).await;
    let health = http_health(&host.http).await;
    assert_eq!(health["status"], "healthy", "/health: {health}");

    for check in &agent_spec.exec_checks {
        run_check(check, &host.doctor_env(&agent_env), &[]);
    }
    for check in &orchestrator_spec.exec_checks {
        run_check(check, &host.doctor_env(&orchestrator_env), &[]);
    }
    complete_in_sandbox(&host.grpc, &turns_file(&host.root)).await;
    let authenticated = !orchestrator_env
        .get("RLM_API_KEYS")
        .is_none_or(|keys| keys.is_empty())
        || orchestrator_env.contains_key("RLM_API_KEYS_FILE");
    if authenticated {
        let anonymous = RlmServiceClient::new(channel(&host.grpc).await.expect("connect"))
            .list_trajectories(ListTrajectoriesRequest::default())
            .await
            .expect_err("a call without an API key is refused");
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    }
    drop(orchestrator);
    drop(agent);
}

fn readme_variables() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    // The first column; a row may name several (`RLM_TLS_CERT` / `RLM_TLS_KEY`).
    readme
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
        .collect()
}

#[test]
fn every_variable_the_deployment_files_set_is_documented() {
    let m = manifests();
    let documented = readme_variables();
    let deployment_doc =
        std::fs::read_to_string(repo().join("docs/deployment.md")).expect("docs/deployment.md");
    let (compose_agent, compose_orchestrator, _) = compose_containers(&m);
    let (k8s_agent, k8s_orchestrator, _) = kubernetes_containers(&m);
    let mut undocumented = Vec::new();
    for (file, spec) in [
        ("compose.yaml sandbox-agent", &compose_agent),
        ("compose.yaml orchestrator", &compose_orchestrator),
        ("k8s sandbox-agent", &k8s_agent),
        ("k8s orchestrator", &k8s_orchestrator),
    ] {
        for key in spec.env.keys() {
            if !documented.contains(key) {
                undocumented.push(format!("{file}: {key}"));
            }
        }
    }
    for kind in ["DaemonSet", "Deployment"] {
        let workloads = m["variants"][VARIANT]["workloads"][kind]
            .as_object()
            .expect("the variant's workloads");
        for (workload, spec) in workloads {
            for (name, container) in spec["containers"].as_object().expect("containers") {
                let set = container["environment"].as_object().expect("environment");
                for key in set.keys().chain(string_map(&container["secrets"]).keys()) {
                    if !documented.contains(key) {
                        undocumented.push(format!("{VARIANT} {kind} {workload} {name}: {key}"));
                    }
                }
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "set in a deployment file but not in README.md's configuration table (the binaries ignore unknown names): {undocumented:?}"
    );

    // Compose interpolation: a binary's variable, or one of the seed's names
    // that compose maps (documented in docs/deployment.md).
    let mappings = ["RLM_DOCKER_MEMORY", "RLM_DOCKER_CPUS"];
    for variable in strings(&m["compose"]["interpolated"]) {
        assert!(
            documented.contains(&variable) || mappings.contains(&variable.as_str()),
            "compose.yaml interpolates {variable}, which is neither a documented variable nor a documented mapping"
        );
    }
    for seed_name in mappings.iter().chain(&["RLM_ENVIRONMENT"]) {
        assert!(
            deployment_doc.contains(&format!("`{seed_name}`")),
            "docs/deployment.md does not document the mapping of {seed_name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_environment_runs_a_healthy_stack() {
    require_root();
    let m = manifests();
    let (agent, orchestrator, mounts) = compose_containers(&m);
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::new(dir.path(), mounts, model_api_stub().await, None);
    run_stack(&agent, &orchestrator, &host).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_environment_runs_a_healthy_stack_and_exports_traces() {
    require_root();
    let m = manifests();
    let (agent, orchestrator, mounts) = kubernetes_containers(&m);
    assert!(
        !orchestrator.grpc_probes.is_empty() && !agent.exec_checks.is_empty(),
        "the Deployment declares probes"
    );
    let (collector, otlp) = rlm_e2e::otlp_collector::Collector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::new(dir.path(), mounts, model_api_stub().await, Some(otlp));
    run_stack(&agent, &orchestrator, &host).await;

    // Both services exported spans under the manifest's OTEL_SERVICE_NAME
    // (the batch exporter flushes at shutdown).
    for spec in [&agent, &orchestrator] {
        let name = &spec.env["OTEL_SERVICE_NAME"];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !collector.spans().iter().any(|s| &s.service_name == name) {
            assert!(
                Instant::now() < deadline,
                "no span from service.name={name}; got {:?}",
                collector
                    .spans()
                    .iter()
                    .map(|s| s.service_name.clone())
                    .collect::<BTreeSet<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// The container privileges, emulated with setpriv and the seccomp profile.

/// A process started with an exact command line and environment; SIGTERM on drop.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, argv: &[String], env: &HashMap<String, String>) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let path = format!(
            "{}:{}",
            binary(AGENT).parent().expect("bin dir").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", path)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {argv:?}: {err}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Polls until `address` is SERVING (Ok) or the process exits (Err: its log).
    async fn serving(&mut self, address: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited ({status}):\n{}",
                    self.name,
                    self.log_text()
                ));
            }
            if let Ok(channel) = channel(address).await
                && let Ok(ServingStatus::Serving) = health_status(channel, "").await
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{} never became SERVING at {address}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- {} log ---\n{}", self.name, self.log_text());
            }
        }
    }
}

/// The agent's cgroup parent made in advance, as the container's own cgroup is
/// (a directory root owns, mode 755): the host's hierarchy roots are mode 555,
/// which a root without CAP_DAC_OVERRIDE cannot create directories in.
struct CgroupParent {
    dirs: Vec<PathBuf>,
}

impl CgroupParent {
    fn create(name: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mut dirs = Vec::new();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(separator) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let fstype = fields.get(separator + 1).copied().unwrap_or_default();
            if fstype == "cgroup" || fstype == "cgroup2" {
                let dir = Path::new(fields[4]).join(name);
                if std::fs::create_dir(&dir).is_ok() {
                    dirs.push(dir);
                }
            }
        }
        Self { dirs }
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        // Whatever the agent left (a session cgroup it was still creating when
        // it stopped, or could not clean up without a capability) goes too;
        // cgroup directories are removed bottom-up once their processes are gone.
        fn remove_tree(dir: &Path) -> bool {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        remove_tree(&entry.path());
                    }
                }
            }
            std::fs::remove_dir(dir).is_ok() || !dir.exists()
        }
        for dir in &self.dirs {
            for _ in 0..50 {
                if remove_tree(dir) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn setpriv_caps(caps: &[String]) -> String {
    let mut bounding = String::from("-all");
    for cap in caps {
        bounding.push_str(&format!(",+{}", cap.to_ascii_lowercase()));
    }
    bounding
}

/// The container's volumes as compose creates them: the socket volume with
/// the owner and mode its driver options give, the log volume owned by the
/// orchestrator's user (from the image), the agent's state owned by root.
fn prepare_volumes(host: &Host, m: &Value) {
    let options = m["compose"]["volumes"]["rlm-run"]["driver_opts"]["o"]
        .as_str()
        .expect("rlm-run volume options");
    let option = |name: &str| {
        options
            .split(',')
            .find_map(|o| o.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("rlm-run has no {name}= option"))
            .to_owned()
    };
    let run = host.root.join("run/rlm");
    let mode = u32::from_str_radix(&option("mode"), 8).expect("octal mode");
    let uid: u32 = option("uid").parse().expect("uid");
    let gid: u32 = option("gid").parse().expect("gid");
    assert_eq!(
        gid, SHARED_ID,
        "the socket volume's group is the orchestrator's"
    );
    nix::unistd::chown(
        &run,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .expect("chown run");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).expect("chmod run");
    let logs = host.root.join("var/log/rlm");
    nix::unistd::chown(
        &logs,
        Some(nix::unistd::Uid::from_raw(SHARED_ID)),
        Some(nix::unistd::Gid::from_raw(SHARED_ID)),
    )
    .expect("chown logs");
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o750)).expect("chmod logs");
    // Let the unprivileged orchestrator traverse the test's directory (mode 700).
    std::fs::set_permissions(&host.root, std::fs::Permissions::from_mode(0o755))
        .expect("chmod test root");
}

/// The agent, confined as the manifests confine it, through the image's entrypoint.
fn start_confined_agent(
    dir: &Path,
    name: &str,
    caps: &[String],
    env: &HashMap<String, String>,
) -> Proc {
    let deploy = repo().join("deploy");
    let argv: Vec<String> = vec![
        python().display().to_string(),
        deploy.join("tools/confine.py").display().to_string(),
        deploy
            .join("docker/sandbox-agent-seccomp.json")
            .display()
            .to_string(),
        "--".into(),
        "setpriv".into(),
        "--reuid=0".into(),
        format!("--regid={SHARED_ID}"),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        format!("--bounding-set={}", setpriv_caps(caps)),
        "sh".into(),
        deploy
            .join("docker/agent-entrypoint.sh")
            .display()
            .to_string(),
    ];
    Proc::spawn(name, dir, &argv, env)
}

/// Creates a session, runs a cell, destroys the session: Ok(uid of the cell).
async fn session_round_trip(address: &str) -> Result<u32, String> {
    let mut sandbox = Sandbox::connect(address).await;
    let info = sandbox
        .client
        .get_info(GetInfoRequest {})
        .await
        .map_err(|s| format!("GetInfo: {}", s.message()))?
        .into_inner();
    if info.isolation_mode() != IsolationMode::Full {
        return Err(format!("isolation {:?}", info.isolation_mode()));
    }
    let session = sandbox
        .client
        .create_session(CreateSessionRequest::default())
        .await
        .map_err(|s| format!("CreateSession: {}", s.message()))?
        .into_inner()
        .session_id;
    let (_stream, run) = CellStream::open(
        &mut sandbox,
        &session,
        "import os, time\nprint(os.getuid(), 6 * 7)\n",
    )
    .await
    .map_err(|s| format!("Execute: {}", s.message()))?;
    let out = run.out();
    let uid = out
        .strip_suffix(" 42\n")
        .and_then(|uid| uid.parse::<u32>().ok())
        .ok_or_else(|| format!("cell printed {out:?}, stderr {:?}", run.err()))?;
    let destroyed = tokio::time::timeout(
        Duration::from_secs(10),
        sandbox.client.destroy_session(DestroySessionRequest {
            session_id: session.clone(),
        }),
    )
    .await
    .map_err(|_| "DestroySession did not return within 10 s".to_owned())?
    .map_err(|s| format!("DestroySession: {}", s.message()))?;
    if !destroyed.into_inner().existed {
        return Err("DestroySession: session did not exist".into());
    }
    Ok(uid)
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_runs_sessions_with_exactly_the_granted_privileges() {
    require_root();
    let m = manifests();
    let services = &m["compose"]["services"];
    let k8s = &m["kubernetes"]["containers"];

    // The two deployment files grant the same.
    let caps = strings(&k8s["sandbox-agent"]["capabilities"]);
    let as_set = |v: &Value| strings(v).into_iter().collect::<BTreeSet<_>>();
    assert_eq!(
        as_set(&services["sandbox-agent"]["cap_add"]),
        caps.iter().cloned().collect::<BTreeSet<_>>(),
        "compose cap_add and the Deployment's capabilities.add differ"
    );
    for dropped in [
        &services["sandbox-agent"]["cap_drop"],
        &services["orchestrator"]["cap_drop"],
        &k8s["sandbox-agent"]["dropped"],
        &k8s["orchestrator"]["dropped"],
    ] {
        assert_eq!(strings(dropped), ["ALL"], "every container drops ALL first");
    }
    assert_eq!(
        services["sandbox-agent"]["user"],
        format!("0:{SHARED_ID}").as_str()
    );
    assert_eq!(
        services["orchestrator"]["user"],
        format!("{SHARED_ID}:{SHARED_ID}").as_str()
    );
    let security = &k8s["sandbox-agent"]["securityContext"];
    assert_eq!(security["runAsUser"], 0);
    assert_eq!(security["runAsGroup"], SHARED_ID);
    let security = &k8s["orchestrator"]["securityContext"];
    assert_eq!(security["runAsUser"], SHARED_ID);
    assert_eq!(security["runAsGroup"], SHARED_ID);
    assert!(
        strings(&services["sandbox-agent"]["security_opt"])
            .contains(&"seccomp=./docker/sandbox-agent-seccomp.json".to_owned()),
        "compose applies the agent's seccomp profile"
    );

    let (agent_spec, orchestrator_spec, mounts) = compose_containers(&m);
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::new(dir.path(), mounts, model_api_stub().await, None);
    prepare_volumes(&host, &m);
    let agent_env = host.swap(&agent_spec.env);
    let orchestrator_env = host.swap(&orchestrator_spec.env);
    let agent_address = agent_env["RLM_AGENT_LISTEN"].clone();

    // The whole stack, confined.
    let cgroup = CgroupParent::create(&host.cgroup);
    let mut agent = start_confined_agent(&host.root, "agent-confined", &caps, &agent_env);
    agent
        .serving(&agent_address)
        .await
        .unwrap_or_else(|log| panic!("the confined agent did not start: {log}"));
    let unprivileged: Vec<String> = [
        "setpriv",
        &format!("--reuid={SHARED_ID}"),
        &format!("--regid={SHARED_ID}"),
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut orchestrator_argv = unprivileged.clone();
    orchestrator_argv.push(binary(ORCHESTRATOR).display().to_string());
    let mut orchestrator = Proc::spawn(
        "orchestrator-unprivileged",
        &host.root,
        &orchestrator_argv,
        &orchestrator_env,
    );
    orchestrator
        .serving(&host.grpc)
        .await
        .unwrap_or_else(|log| panic!("the unprivileged orchestrator did not start: {log}"));
    // /health: the orchestrator (uid 65532) reached the agent through the
    // group-shared socket and wrote to its log volume.
    let health = http_health(&host.http).await;
    assert_eq!(health["status"], "healthy", "/health: {health}");
    // Its health check, run as the container's user.
    for check in &orchestrator_spec.exec_checks {
        run_check(check, &host.doctor_env(&orchestrator_env), &unprivileged);
    }
    let uid = complete_in_sandbox(&host.grpc, &turns_file(&host.root)).await;
    assert_ne!(uid, SHARED_ID);
    drop(orchestrator);
    session_round_trip(&agent_address)
        .await
        .unwrap_or_else(|err| panic!("session with the granted capabilities: {err}"));
    drop(agent);
    drop(cgroup);

    // Each capability is needed: without it, no session runs.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let attempt = host.root.join(format!("without-{missing}"));
        std::fs::create_dir_all(attempt.join("run")).expect("attempt dir");
        let mut env = agent_env.clone();
        let address = format!("unix://{}", attempt.join("run/sandbox.sock").display());
        env.insert("RLM_AGENT_LISTEN".into(), address.clone());
        env.insert(
            "RLM_AGENT_DATA_DIR".into(),
            attempt.join("data").display().to_string(),
        );
        let name = format!("{}-{}", host.cgroup, missing.to_ascii_lowercase());
        env.insert("RLM_AGENT_CGROUP".into(), name.clone());
        let cgroup = CgroupParent::create(&name);
        let mut agent =
            start_confined_agent(&attempt, &format!("agent-without-{missing}"), &fewer, &env);
        let outcome = match agent.serving(&address).await {
            Err(log) => Err(format!(
                "refused to start: {}",
                log.lines().last().unwrap_or_default()
            )),
            Ok(()) => session_round_trip(&address).await,
        };
        drop(agent);
        drop(cgroup);
        match outcome {
            Ok(uid) => panic!(
                "without CAP_{missing} the agent still ran a session (as uid {uid}): drop it from the manifests"
            ),
            Err(why) => eprintln!("without CAP_{missing}: {why}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The DaemonSet + mutual TLS variant: deploy/k8s with components/daemonset-mtls,
// as deploy/tools/manifests.py renders it (the same objects `kubectl kustomize`
// renders: deploy/check.sh compares them).

const VARIANT: &str = "daemonset-mtls";

/// The single `kind` among the variant's workloads.
fn only_workload<'a>(variant: &'a Value, kind: &str) -> &'a Value {
    let workloads = variant["workloads"][kind]
        .as_object()
        .unwrap_or_else(|| panic!("no {kind} in the {VARIANT} variant"));
    assert_eq!(
        workloads.len(),
        1,
        "one {kind} in the variant: {:?}",
        workloads.keys()
    );
    workloads.values().next().expect("one workload")
}

/// Whether a non-empty label selector matches `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A container's environment before the kubelet's `$(VAR)` expansion: the
/// image's `ENV`, the manifest's values over it, and a stand-in for every
/// secretKeyRef. (No other `valueFrom` is emulated.)
fn manifest_env(container: &Value) -> BTreeMap<String, String> {
    let mut env = string_map(&container["image_facts"]["env"]);
    for (key, value) in container["environment"].as_object().expect("environment") {
        let value = value
            .as_str()
            .unwrap_or_else(|| panic!("{key}: only values and secretKeyRefs are emulated"));
        env.insert(key.clone(), value.to_owned());
    }
    for key in string_map(&container["secrets"]).keys() {
        env.insert(key.clone(), format!("test-value-of-{key}"));
    }
    env
}

fn service_env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// One port of a Service: (name, protocol, declared port, local stand-in port).
type ServicePort = (Option<String>, String, u64, u16);

/// The variables the kubelet injects for a Service (`enableServiceLinks`),
/// named after the declared ports, with `ip` for the cluster IP and the local
/// ports in the values.
fn service_links(name: &str, ip: &str, ports: &[ServicePort]) -> BTreeMap<String, String> {
    let prefix = service_env_name(name);
    let mut env = BTreeMap::from([(format!("{prefix}_SERVICE_HOST"), ip.to_owned())]);
    if let Some((_, protocol, _, local)) = ports.first() {
        let scheme = protocol.to_ascii_lowercase();
        env.insert(format!("{prefix}_SERVICE_PORT"), local.to_string());
        env.insert(format!("{prefix}_PORT"), format!("{scheme}://{ip}:{local}"));
    }
    for (port_name, protocol, declared, local) in ports {
        let scheme = protocol.to_ascii_lowercase();
        if let Some(port_name) = port_name {
            env.insert(
                format!("{prefix}_SERVICE_PORT_{}", service_env_name(port_name)),
                local.to_string(),
            );
        }
        let base = format!("{prefix}_PORT_{declared}_{}", protocol.to_ascii_uppercase());
        env.insert(base.clone(), format!("{scheme}://{ip}:{local}"));
        env.insert(format!("{base}_PROTO"), scheme);
        env.insert(format!("{base}_PORT"), local.to_string());
        env.insert(format!("{base}_ADDR"), ip.to_owned());
    }
    env
}

/// The kubelet's expansion of a manifest value: `$(NAME)` becomes the
/// variable's value, `$$` a literal `$`; an unknown reference stays as written.
fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        if let Some(after) = tail.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = tail.strip_prefix('(').and_then(|t| t.split_once(')')) {
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&format!("$({name})")),
            }
            rest = after;
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// A throwaway CA and the certificates the variant's two Secrets hold: the
/// agents' (server auth, naming `server_name`) and the orchestrators' (client
/// auth), each Secret with the CA as `ca.crt`, as cert-manager writes them.
struct VariantPki {
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

impl VariantPki {
    fn new(dir: &Path, server_name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rlm test CA",
        ]);
        openssl(dir, &ca);
        for (name, ext) in [
            (
                "server",
                format!("subjectAltName=DNS:{server_name}\nextendedKeyUsage=serverAuth\n"),
            ),
            ("client", "extendedKeyUsage=clientAuth\n".to_owned()),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subject = format!("/CN=rlm-{name}");
            let mut request = vec!["req"];
            request.extend(ec);
            request.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
            openssl(dir, &request);
            let extfile = format!("{name}.ext");
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                ],
            );
        }
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).expect("pem")
    }

    /// What a `kubernetes.io/tls` Secret holds under `key` for `identity`
    /// ("server" or "client").
    fn secret_item(&self, identity: &str, key: &str) -> Vec<u8> {
        match key {
            "tls.crt" => self.read(&format!("{identity}.pem")),
            "tls.key" => self.read(&format!("{identity}.key")),
            "ca.crt" => self.read("ca.pem"),
            other => panic!("unexpected key {other} in a TLS Secret"),
        }
    }

    fn client_tls(&self, server_name: &str, with_identity: bool) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .domain_name(server_name);
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

/// Writes the files the kubelet makes for a container's Secret volumes: each
/// item owned by root with the pod's fsGroup as group and the volume's mode;
/// the API key list (`keys`) or the PEMs of `identity` (TLS Secrets).
fn write_secret_volumes(
    host: &Host,
    workload: &Value,
    container: &str,
    pki: &VariantPki,
    identity: &str,
) {
    let pod = &workload["pod"];
    let group = pod["securityContext"]["fsGroup"].as_u64().unwrap_or(0) as u32;
    let mounts = workload["containers"][container]["mounts"]
        .as_object()
        .expect("mounts");
    for (path, mount) in mounts {
        let volume = &pod["volumes"][mount["name"].as_str().expect("volume name")];
        let Some(secret) = volume.get("secret") else {
            continue;
        };
        for item in secret["items"]
            .as_array()
            .expect("Secret volumes list their items")
        {
            let key = item["key"].as_str().expect("key");
            let file = host
                .root
                .join(path.trim_start_matches('/'))
                .join(item["path"].as_str().expect("path"));
            let content = match key {
                "keys" => format!("deploy-test:{TEST_API_KEY}\n").into_bytes(),
                key => pki.secret_item(identity, key),
            };
            std::fs::write(&file, content).expect("writing a Secret file");
            nix::unistd::chown(
                &file,
                Some(nix::unistd::Uid::from_raw(0)),
                Some(nix::unistd::Gid::from_raw(group)),
            )
            .expect("chown Secret file");
            let mode = item["mode"]
                .as_u64()
                .or(secret["defaultMode"].as_u64())
                .unwrap_or(0o644) as u32;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                .expect("chmod Secret file");
        }
    }
}

async fn tls_channel(
    address: &str,
    tls: ClientTlsConfig,
) -> anyhow::Result<tonic::transport::Channel> {
    Ok(Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?)
}

/// Polls until the agent answers health over mutual TLS (Err: it exited, its log).
async fn tls_serving(
    process: &mut Proc,
    address: &str,
    tls: &ClientTlsConfig,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.exited() {
            return Err(format!(
                "{} exited ({status}):\n{}",
                process.name,
                process.log_text()
            ));
        }
        if let Ok(channel) = tls_channel(address, tls.clone()).await
            && let Ok(ServingStatus::Serving) = health_status(channel, "").await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} never served mutual TLS at {address}:\n{}",
                process.name,
                process.log_text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Kubernetes probe run as the kubelet runs it, against the local stand-ins
/// of the container's ports (`ports`: port name or number -> local address).
async fn kubelet_probe(what: &str, probe: &Value, ports: &BTreeMap<String, String>) {
    let address = |port: &Value| {
        let key = match port {
            Value::String(name) => name.clone(),
            other => other.to_string(),
        };
        ports
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("{what}: port {key} is not a declared container port"))
    };
    if let Some(tcp) = probe.get("tcpSocket") {
        let address = address(&tcp["port"]);
        std::net::TcpStream::connect_timeout(
            &address.parse().expect("socket address"),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|err| panic!("{what}: tcpSocket {address}: {err}"));
    } else if let Some(grpc) = probe.get("grpc") {
        let address = address(&grpc["port"]);
        let service = grpc["service"].as_str().unwrap_or_default();
        let status = health_status(channel(&address).await.expect("connect"), service)
            .await
            .unwrap_or_else(|err| panic!("{what}: gRPC health {address} {service:?}: {err}"));
        assert_eq!(status, ServingStatus::Serving, "{what}");
    } else if let Some(http) = probe.get("httpGet") {
        let url = format!(
            "http://{}{}",
            address(&http["port"]),
            http["path"].as_str().unwrap_or("/")
        );
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|err| panic!("{what}: GET {url}: {err}"));
        let status = response.status().as_u16();
        assert!((200..400).contains(&status), "{what}: GET {url}: {status}");
    } else {
        panic!("{what}: a probe kind this test does not run: {probe}");
    }
}

/// Port names and numbers of a container -> local addresses, given the local
/// stand-in of each container port number.
fn probe_ports(container: &Value, local: &BTreeMap<u64, String>) -> BTreeMap<String, String> {
    let mut ports = BTreeMap::new();
    for (name, number) in container["ports"].as_object().expect("ports") {
        let number = number.as_u64().expect("containerPort");
        if let Some(address) = local.get(&number) {
            ports.insert(name.clone(), address.clone());
            ports.insert(number.to_string(), address.clone());
        }
    }
    ports
}

/// The port of a `tcp://0.0.0.0:PORT` or `0.0.0.0:PORT` listen address.
fn listen_port(value: &str) -> u64 {
    value
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{value}: no port"))
}

#[tokio::test(flavor = "multi_thread")]
async fn daemonset_mtls_variant_runs_a_healthy_stack_over_mutual_tls() {
    require_root();
    let m = manifests();
    let variant = &m["variants"][VARIANT];
    let namespace = variant["namespace"].as_str().expect("namespace");
    let daemonset = only_workload(variant, "DaemonSet");
    let deployment = only_workload(variant, "Deployment");
    let agent = &daemonset["containers"]["sandbox-agent"];
    let orchestrator = &deployment["containers"]["orchestrator"];

    // The layout: agents in a DaemonSet without host network, with exactly the
    // sidecar's privileges; orchestrators without a sidecar.
    assert_eq!(
        daemonset["containers"].as_object().map(|c| c.len()),
        Some(1),
        "the DaemonSet runs the agent alone"
    );
    assert_eq!(
        deployment["containers"]
            .as_object()
            .expect("containers")
            .keys()
            .collect::<Vec<_>>(),
        ["orchestrator"],
        "the orchestrator pod has no sidecar"
    );
    assert_eq!(daemonset["pod"]["hostNetwork"], false);
    assert_eq!(
        agent["securityContext"], m["kubernetes"]["containers"]["sandbox-agent"]["securityContext"],
        "the DaemonSet's agent has the sidecar's privileges"
    );

    // The node-local Service in front of the agents, and the name in their certificate.
    let (service_name, service) = variant["services"]
        .as_object()
        .expect("services")
        .iter()
        .find(|(_, spec)| selects(&spec["selector"], &daemonset["labels"]))
        .expect("a Service selects the agents");
    assert_eq!(service["internalTrafficPolicy"], "Local");
    let server_name = format!("{service_name}.{namespace}.svc");
    let target = &service["ports"][0]["targetPort"];
    let agent_port = match target {
        Value::String(name) => agent["ports"][name].as_u64().expect("named port"),
        other => other.as_u64().expect("port number"),
    };
    let agent_manifest_env = manifest_env(agent);
    assert_eq!(
        agent_manifest_env["RLM_AGENT_LISTEN"],
        format!("tcp://0.0.0.0:{agent_port}"),
        "the agent listens on the port its Service targets, on every interface"
    );

    // Stand-ins: the volumes under a temporary root, the Secrets' files from a
    // throwaway CA, local ports.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = VariantPki::new(&dir.path().join("pki"), &server_name);
    let root = dir.path().join("root");
    let mounts: BTreeSet<String> = [agent, orchestrator]
        .iter()
        .flat_map(|c| c["mounts"].as_object().expect("mounts").keys().cloned())
        .collect();
    let host = Host::new(
        &root,
        mounts.into_iter().collect(),
        model_api_stub().await,
        None,
    );
    write_secret_volumes(&host, daemonset, "sandbox-agent", &pki, "server");
    write_secret_volumes(&host, deployment, "orchestrator", &pki, "client");
    // The trajectory volume as the PVC with fsGroup gives it; the root traversable.
    let logs = root.join(
        orchestrator["environment"]["RLM_LOG_DIR"]
            .as_str()
            .expect("RLM_LOG_DIR")
            .trim_start_matches('/'),
    );
    nix::unistd::chown(
        &logs,
        Some(nix::unistd::Uid::from_raw(SHARED_ID)),
        Some(nix::unistd::Gid::from_raw(SHARED_ID)),
    )
    .expect("chown logs");
    for path in [dir.path(), &root] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let local_agent = format!("127.0.0.1:{}", free_port());
    let mut agent_env = host.swap(&agent_manifest_env);
    agent_env.insert("RLM_AGENT_LISTEN".into(), format!("tcp://{local_agent}"));

    // The orchestrator's environment: the Service variables the kubelet
    // injects (every Service's cluster IP standing in as 127.0.0.1, the
    // agents' Service port as the local agent's), then the manifest's values
    // with `$(...)` expanded.
    assert_eq!(deployment["pod"]["enableServiceLinks"], true);
    let documented = readme_variables();
    let mut links = BTreeMap::new();
    for (name, spec) in variant["services"].as_object().expect("services") {
        let ports: Vec<ServicePort> = spec["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|port| {
                let declared = port["port"].as_u64().expect("port");
                let local = if name == service_name {
                    listen_port(&local_agent) as u16
                } else {
                    declared as u16
                };
                (
                    port["name"].as_str().map(str::to_owned),
                    port["protocol"].as_str().unwrap_or("TCP").to_owned(),
                    declared,
                    local,
                )
            })
            .collect();
        links.extend(service_links(name, "127.0.0.1", &ports));
    }
    let clashes: Vec<&String> = links.keys().filter(|k| documented.contains(*k)).collect();
    assert!(
        clashes.is_empty(),
        "Service variables that are settings: {clashes:?}"
    );
    let mut orchestrator_manifest_env = links.clone();
    for (key, value) in manifest_env(orchestrator) {
        let value = expand(&value, &links);
        assert!(
            !value.contains("$("),
            "{key}={value}: an unresolved reference"
        );
        orchestrator_manifest_env.insert(key, value);
    }
    let orchestrator_env = host.swap(&orchestrator_manifest_env);
    assert_eq!(
        orchestrator_env["RLM_SANDBOX_ENDPOINT"],
        format!("tcp://{local_agent}"),
        "the orchestrator dials the agents' Service"
    );
    assert_eq!(orchestrator_env["RLM_SANDBOX_TLS_SERVER_NAME"], server_name);

    // The agent, confined as the DaemonSet confines it.
    let cgroup = CgroupParent::create(&host.cgroup);
    let caps = strings(&agent["capabilities"]);
    let mut agent_process = start_confined_agent(&root, "agent-daemonset", &caps, &agent_env);
    tls_serving(
        &mut agent_process,
        &local_agent,
        &pki.client_tls(&server_name, true),
    )
    .await
    .unwrap_or_else(|log| panic!("the confined agent did not serve mutual TLS: {log}"));
    let agent_ports = probe_ports(agent, &BTreeMap::from([(agent_port, local_agent.clone())]));
    for (kind, probe) in agent["probes"].as_object().expect("probes") {
        kubelet_probe(&format!("agent {kind}"), probe, &agent_ports).await;
    }
    // Why TCP probes: what the kubelet's gRPC probe would send (plaintext,
    // no client certificate) is refused, and so is TLS without a certificate.
    let plaintext = match channel(&local_agent).await {
        Ok(channel) => health_status(channel, "").await.is_err(),
        Err(_) => true,
    };
    assert!(plaintext, "the agent answered plaintext gRPC");
    let anonymous = match tls_channel(&local_agent, pki.client_tls(&server_name, false)).await {
        Ok(channel) => health_status(channel, "").await.is_err(),
        Err(_) => true,
    };
    assert!(
        anonymous,
        "the agent answered a client without a certificate"
    );

    // The orchestrator, as the Deployment runs it: its uid and gid, the pod's
    // fsGroup as supplementary group (the Secret files' group), no capabilities.
    let security = &orchestrator["securityContext"];
    let fs_group = &deployment["pod"]["securityContext"]["fsGroup"];
    let mut argv: Vec<String> = vec![
        "setpriv".into(),
        format!("--reuid={}", security["runAsUser"]),
        format!("--regid={}", security["runAsGroup"]),
        format!("--groups={fs_group}"),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        "--bounding-set=-all".into(),
        "--no-new-privs".into(),
    ];
    argv.push(binary(ORCHESTRATOR).display().to_string());
    let mut orchestrator_process = Proc::spawn(
        "orchestrator-daemonset-mtls",
        &root,
        &argv,
        &orchestrator_env,
    );
    orchestrator_process
        .serving(&host.grpc)
        .await
        .unwrap_or_else(|log| panic!("the orchestrator did not start: {log}"));
    let orchestrator_ports = probe_ports(
        orchestrator,
        &BTreeMap::from([
            (
                listen_port(&orchestrator_manifest_env["RLM_LISTEN"]),
                host.grpc.clone(),
            ),
            (
                listen_port(&orchestrator_manifest_env["RLM_HTTP_LISTEN"]),
                host.http.clone(),
            ),
        ]),
    );
    for (kind, probe) in orchestrator["probes"].as_object().expect("probes") {
        kubelet_probe(&format!("orchestrator {kind}"), probe, &orchestrator_ports).await;
    }
    // Its readiness (/health) saw the agent over mutual TLS.
    let health = http_health(&host.http).await;
    assert_eq!(
        health["components"]["sandbox"], "healthy",
        "/health: {health}"
    );
    assert_eq!(health["status"], "healthy", "/health: {health}");

    // A completion whose code runs in the agent's session, over mutual TLS.
    complete_in_sandbox(&host.grpc, &turns_file(&root)).await;
    let anonymous = RlmServiceClient::new(channel(&host.grpc).await.expect("connect"))
        .list_trajectories(ListTrajectoriesRequest::default())
        .await
        .expect_err("a call without an API key is refused");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    drop(orchestrator_process);
    drop(agent_process);
    drop(cgroup);
}
