#!/usr/bin/env python3
"""Consistency checks of the deployment files that no schema can express.

Run by deploy/check.sh after the schema checks. Exits 1 listing every problem:

  kustomization  deploy/k8s/kustomization.yaml lists every manifest in
                 deploy/k8s/ exactly once, and nothing else.
  kubernetes     selectors, names and ports agree across Deployment, Service,
                 HPA, PDB, NetworkPolicy, ServiceAccount and PVC; probes hit the
                 declared ports; API keys only through secretKeyRef; the pod
                 mounts no service-account token; the orchestrator is non-root,
                 read-only, drops ALL; the agent has no port.
  compose        both containers read-only, cap_drop ALL, no-new-privileges, no
                 `privileged`; the agent's socket is on a volume the orchestrator
                 mounts read-only at the same path; RLM_LOG_DIR is a volume; ports
                 published on loopback only; API keys only from the environment.
  images         each compose healthcheck is its Dockerfile's HEALTHCHECK; EXPOSE
                 matches the listen ports.
  both           compose and the Deployment grant the agent the same capabilities
                 and agree on the socket, its mode and the data/log directories;
                 the seccomp profile denies nothing isolation needs.
  daemonset-mtls the variant deploy/k8s + components/daemonset-mtls: manifests.py
                 renders it as `kubectl kustomize` does (when kubectl is
                 installed); the agents are a DaemonSet without host network or
                 host ports, with exactly the sidecar's securityContext, TCP
                 probes and mutual TLS from Secret files; the node-local Service
                 (internalTrafficPolicy Local) targets their port; the
                 orchestrators have no sidecar, dial that Service's address with
                 the Service's DNS name as TLS server name, are ready only when
                 /health is; the NetworkPolicies admit only orchestrator pods to
                 the agent port; the injected Service variables are no setting;
                 the optional cert-manager component issues the mounted Secrets.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifests  # noqa: E402

DEPLOY = manifests.DEPLOY
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def check_kustomization():
    k8s = DEPLOY / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    present = sorted(p.name for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    check(len(listed) == len(set(listed)), f"kustomization.yaml lists a resource twice: {listed}")
    for name in present:
        check(name in listed, f"deploy/k8s/{name} is not listed in kustomization.yaml")
    for name in listed:
        check(name in present, f"kustomization.yaml lists {name}, which is not in deploy/k8s/")
    for entry in kustomization.get("images", []):
        check(entry["name"] in ("rlm-orchestrator", "rlm-sandbox-agent"), f"unknown image {entry['name']}")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_kubernetes(facts):
    objects = {}
    for _, document in manifests.k8s_documents():
        objects.setdefault(document["kind"], []).append(document)
    deployment = objects["Deployment"][0]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    check(selects(deployment["spec"]["selector"]["matchLabels"], labels), "Deployment selector does not match its pods")
    containers = {c["name"]: c for c in spec.get("containers", []) + spec.get("initContainers", [])}
    orchestrator, agent = containers["orchestrator"], containers["sandbox-agent"]
    port_names = {p["name"]: p["containerPort"] for p in orchestrator.get("ports", [])}

    for service in objects.get("Service", []):
        check(selects(service["spec"]["selector"], labels), f"Service {service['metadata']['name']} selects no RLM pod")
        for port in service["spec"]["ports"]:
            check(port["targetPort"] in port_names, f"Service port {port['name']} targets unknown port {port['targetPort']}")
            check(port_names.get(port["targetPort"]) == port["port"], f"Service port {port['name']} is not the container's port number")
    for hpa in objects.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        check(target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"], "HPA does not scale the Deployment")
        kinds = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
        check(kinds == {"cpu", "memory"}, f"HPA scales on {kinds}, not CPU and memory")
        for name in ("orchestrator", "sandbox-agent"):
            requests = containers[name].get("resources", {}).get("requests", {})
            check({"cpu", "memory"} <= set(requests), f"{name} has no CPU/memory requests (the HPA's utilisation needs them)")
    for pdb in objects.get("PodDisruptionBudget", []):
        check(selects(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selects no RLM pod")
    for policy in objects.get("NetworkPolicy", []):
        check(selects(policy["spec"]["podSelector"]["matchLabels"], labels), "NetworkPolicy selects no RLM pod")
        check(set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "NetworkPolicy must restrict both directions")
        ingress_ports = {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
        check(ingress_ports == set(port_names), f"NetworkPolicy ingress ports {ingress_ports} are not exactly {set(port_names)}")
        for rule in policy["spec"].get("ingress", []):
            check(rule.get("ports"), "an ingress rule without ports opens every port")
        for rule in policy["spec"].get("egress", []):
            check(rule.get("ports"), "an egress rule without ports opens every port")
    accounts = {a["metadata"]["name"]: a for a in objects.get("ServiceAccount", [])}
    account = accounts.get(spec.get("serviceAccountName"))
    check(account is not None, "the pods' ServiceAccount is not among the manifests")
    check(account is None or account.get("automountServiceAccountToken") is False, "ServiceAccount mounts a token")
    check(spec.get("automountServiceAccountToken") is False, "the pod mounts a service-account token")
    check(spec.get("enableServiceLinks") is False, "Service links inject *_SERVICE_HOST/_PORT variables into the containers")
    claims = {c["metadata"]["name"] for c in objects.get("PersistentVolumeClaim", [])}
    for volume in spec.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            check(volume["persistentVolumeClaim"]["claimName"] in claims, f"volume {volume['name']} claims a PVC that is not shipped")

    for name, container in containers.items():
        for item in container.get("env", []):
            if item["name"].endswith("_API_KEY"):
                check("valueFrom" in item and "secretKeyRef" in item["valueFrom"], f"{name}: {item['name']} must come from a Secret")
        security = container.get("securityContext", {})
        check(security.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem is writable")
        check(security.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: does not drop ALL capabilities")
        check(not security.get("privileged"), f"{name}: privileged")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            check(kind in container, f"{name}: no {kind}")
            grpc = container.get(kind, {}).get("grpc")
            if grpc:
                check(grpc["port"] == port_names.get("grpc"), f"{name}: {kind} is not on the gRPC port")
        check("limits" in container.get("resources", {}), f"{name}: no resource limits")
    security = orchestrator["securityContext"]
    check(security.get("runAsNonRoot") is True and security.get("runAsUser", 0) != 0, "orchestrator may run as root")
    check(security.get("allowPrivilegeEscalation") is False, "orchestrator allows privilege escalation")
    check(security.get("seccompProfile", {}).get("type") == "RuntimeDefault", "orchestrator: seccomp is not RuntimeDefault")
    check(not orchestrator["securityContext"].get("capabilities", {}).get("add"), "orchestrator adds capabilities")
    check(not agent.get("ports"), "the agent must not listen on a port")
    allowed = facts["containers"]["sandbox-agent"]["environment"].get("RLM_AGENT_ALLOWED_UIDS", "").split(",")
    check(
        str(security.get("runAsUser")) in allowed and "0" in allowed,
        "RLM_AGENT_ALLOWED_UIDS must admit the orchestrator's uid and root (the agent's probes)",
    )
    check(agent.get("restartPolicy") == "Always", "the agent is not a native sidecar")
    mounts = {m["mountPath"]: m for m in orchestrator.get("volumeMounts", [])}
    socket_dir = str(Path(facts["containers"]["orchestrator"]["environment"]["RLM_SANDBOX_ENDPOINT"].removeprefix("unix://")).parent)
    check(mounts.get(socket_dir, {}).get("readOnly") is True, "orchestrator: the socket directory is not mounted read-only")
    agent_mounts = {m["mountPath"]: m["name"] for m in agent.get("volumeMounts", [])}
    check(agent_mounts.get(socket_dir) == mounts.get(socket_dir, {}).get("name"), "agent and orchestrator do not share the socket volume")
    log_dir = facts["containers"]["orchestrator"]["environment"]["RLM_LOG_DIR"]
    check(log_dir in mounts, "orchestrator: RLM_LOG_DIR is not a volume")
    # Client authentication: keys from a Secret file, never inline.
    env = facts["containers"]["orchestrator"]["environment"]
    check("RLM_API_KEYS" not in env, "orchestrator: RLM_API_KEYS inline; use RLM_API_KEYS_FILE from a Secret")
    keys_file = env.get("RLM_API_KEYS_FILE")
    check(keys_file is not None, "orchestrator: no RLM_API_KEYS_FILE: the API would be unauthenticated")
    if keys_file:
        mount = mounts.get(str(Path(keys_file).parent), {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        secret = volumes.get(mount.get("name"), {}).get("secret")
        check(secret is not None and mount.get("readOnly") is True, "orchestrator: RLM_API_KEYS_FILE is not on a read-only Secret volume")
        check(secret is None or not secret.get("optional"), "the API key Secret must not be optional")


def volume_target(entry):
    parts = entry.split(":")
    return parts[0], parts[1], parts[2:] if len(parts) > 2 else []


def check_compose(compose):
    raw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    text = (DEPLOY / "compose.yaml").read_text()
    for name, service in compose["services"].items():
        raw_service = raw["services"][name]
        check(service["read_only"], f"compose {name}: not read_only")
        check(service["cap_drop"] == ["ALL"], f"compose {name}: does not drop ALL capabilities")
        check("no-new-privileges:true" in service["security_opt"], f"compose {name}: no no-new-privileges")
        check(not raw_service.get("privileged"), f"compose {name}: privileged")
        check(service["healthcheck"] == service["image_facts"]["healthcheck"], f"compose {name}: healthcheck differs from its Dockerfile's HEALTHCHECK")
        check("limits" in service["deploy"].get("resources", {}), f"compose {name}: no resource limits")
        for key, value in (raw_service.get("environment") or {}).items():
            if key.endswith("_API_KEY") or key == "RLM_API_KEYS":
                check(value == "${%s:-}" % key, f"compose {name}: {key} must come from the environment, not the file")
        for port in service["ports"]:
            check(str(port).startswith("127.0.0.1:"), f"compose {name}: {port} is published beyond loopback (the compose file sets up neither TLS nor required API keys)")
    agent, orchestrator = compose["services"]["sandbox-agent"], compose["services"]["orchestrator"]
    check(not orchestrator["cap_add"], "compose orchestrator: adds capabilities")
    check(agent["network_mode"] == "none", "compose sandbox-agent: has a network")
    socket = agent["environment"]["RLM_AGENT_LISTEN"]
    check(orchestrator["environment"]["RLM_SANDBOX_ENDPOINT"] == socket, "compose: RLM_SANDBOX_ENDPOINT is not the agent's socket")
    socket_dir = str(Path(socket.removeprefix("unix://")).parent)
    agent_volumes = {volume_target(v)[1]: volume_target(v) for v in agent["volumes"]}
    orchestrator_volumes = {volume_target(v)[1]: volume_target(v) for v in orchestrator["volumes"]}
    check(socket_dir in agent_volumes and socket_dir in orchestrator_volumes, "compose: the socket directory is not a shared volume")
    if socket_dir in agent_volumes and socket_dir in orchestrator_volumes:
        check(agent_volumes[socket_dir][0] == orchestrator_volumes[socket_dir][0], "compose: different volumes at the socket directory")
        check(orchestrator_volumes[socket_dir][2] == ["ro"], "compose orchestrator: socket volume not read-only")
        options = compose["volumes"][agent_volumes[socket_dir][0]]["driver_opts"]["o"]
        check(f"gid={orchestrator['user'].split(':')[1]}" in options, "compose: the socket volume's group is not the orchestrator's")
    check(agent["environment"]["RLM_AGENT_SOCKET_MODE"] == "660", "compose: the socket must be mode 660 (group-shared)")
    allowed = agent["environment"].get("RLM_AGENT_ALLOWED_UIDS", "").split(",")
    check(
        orchestrator["user"].split(":")[0] in allowed and "0" in allowed,
        "compose: RLM_AGENT_ALLOWED_UIDS must admit the orchestrator's uid and root (the agent's health check)",
    )
    check(agent["user"].split(":") == ["0", orchestrator["user"].split(":")[1]], "compose: the agent's gid is not the orchestrator's")
    check(orchestrator["environment"]["RLM_LOG_DIR"] in orchestrator_volumes, "compose orchestrator: RLM_LOG_DIR is not a volume")
    for volume in list(agent["volumes"]) + list(orchestrator["volumes"]):
        check(volume_target(volume)[0] in compose["volumes"], f"compose: volume {volume} is not declared")
    check(orchestrator["depends_on"].get("sandbox-agent", {}).get("condition") == "service_healthy", "compose: the orchestrator does not wait for a healthy agent")
    check("${RLM_DOCKER_MEMORY" in text and "${RLM_DOCKER_CPUS" in text, "compose: RLM_DOCKER_MEMORY/RLM_DOCKER_CPUS are not mapped")


def check_images(facts):
    for dockerfile in ("orchestrator.Dockerfile", "sandbox-agent.Dockerfile"):
        exposed = []
        for instruction, arguments in manifests.dockerfile_instructions(DEPLOY / "docker" / dockerfile):
            if instruction == "EXPOSE":
                exposed += [int(p.split("/")[0]) for p in arguments.split()]
        env = manifests.image_facts(dockerfile)["env"]
        ports = sorted(int(env[k].rsplit(":", 1)[1]) for k in ("RLM_LISTEN", "RLM_HTTP_LISTEN") if k in env)
        check(sorted(exposed) == ports, f"{dockerfile}: EXPOSE {exposed} but listens on {ports}")
        check(
            (DEPLOY / "docker" / f"{dockerfile}.dockerignore").is_file(),
            f"{dockerfile}: no {dockerfile}.dockerignore (the context is the workspace root, target/ included)",
        )


def check_both(facts):
    compose, k8s = facts["compose"]["services"], facts["kubernetes"]["containers"]
    check(
        sorted(compose["sandbox-agent"]["cap_add"]) == sorted(k8s["sandbox-agent"]["capabilities"]),
        "compose and the Deployment grant the agent different capabilities",
    )
    for container, keys in (
        ("sandbox-agent", ("RLM_AGENT_LISTEN", "RLM_AGENT_SOCKET_MODE", "RLM_AGENT_ALLOWED_UIDS", "RLM_AGENT_DATA_DIR", "RLM_AGENT_ISOLATION")),
        ("orchestrator", ("RLM_SANDBOX_ENDPOINT", "RLM_LOG_DIR", "RLM_LISTEN", "RLM_HTTP_LISTEN")),
    ):
        service = "sandbox-agent" if container == "sandbox-agent" else "orchestrator"
        for key in keys:
            check(
                compose[service]["environment"].get(key) == k8s[container]["environment"].get(key),
                f"{key} differs between compose and the Deployment",
            )
    check(k8s["sandbox-agent"]["environment"]["RLM_AGENT_ISOLATION"] == "full", "the Deployment does not isolate sessions")
    profile = json.loads((DEPLOY / "docker" / "sandbox-agent-seccomp.json").read_text())
    denied = {name for rule in profile["syscalls"] if rule["action"] != "SCMP_ACT_ALLOW" for name in rule["names"]}
    needed = {"clone", "unshare", "mount", "umount2", "pivot_root", "sethostname", "setresuid", "setresgid",
              "setgroups", "prctl", "seccomp", "execve", "kill", "ioctl", "socket", "close_range"}
    check(not (denied & needed), f"the agent's seccomp profile denies what isolation needs: {sorted(denied & needed)}")
    check(profile["defaultAction"] == "SCMP_ACT_ALLOW" and profile.get("architectures"), "seccomp profile: unexpected shape")


def readme_variables():
    """Names in the first column of README.md's configuration table."""
    names = set()
    for line in (DEPLOY.parent / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def check_components():
    """Every variable a component sets is documented; its Secret is not inline."""
    documented = readme_variables()
    for patch in sorted((DEPLOY / "k8s" / "components").glob("*/*.yaml")):
        for document in yaml.safe_load_all(patch.read_text()):
            if not document or document.get("kind") not in ("Deployment", "DaemonSet"):
                continue
            pod = document["spec"]["template"]["spec"]
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                for item in container.get("env", []):
                    check(item["name"] in documented, f"{patch.relative_to(DEPLOY)}: {item['name']} is not in README.md's table")
        kustomization = patch.parent / "kustomization.yaml"
        check(kustomization.is_file(), f"{patch.parent.relative_to(DEPLOY)} has no kustomization.yaml")


def kubectl_render(components):
    """`kubectl kustomize` of an overlay {resources: [deploy/k8s], components};
    None when kubectl (or deploy/.venv, where the overlay goes) is missing."""
    venv = DEPLOY / ".venv"
    if not shutil.which("kubectl") or not venv.is_dir():
        return None
    with tempfile.TemporaryDirectory(dir=venv) as overlay:
        relative = lambda path: os.path.relpath(path, overlay)  # noqa: E731
        (Path(overlay) / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [relative(DEPLOY / "k8s")],
            "components": [relative(DEPLOY / "k8s" / "components" / c) for c in components],
        }))
        output = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True)
    if output.returncode != 0:
        problems.append(f"kubectl kustomize with {components}: {output.stderr.strip()}")
        return None
    return [d for d in yaml.safe_load_all(output.stdout) if d]


def service_env_prefix(name):
    return name.upper().replace("-", "_")


def service_link_names(name, spec):
    """The variables the kubelet injects for a Service (enableServiceLinks)."""
    prefix = service_env_prefix(name)
    names = {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
    for port in spec.get("ports", []):
        if port.get("name"):
            names.add(f"{prefix}_SERVICE_PORT_{service_env_prefix(port['name'])}")
        base = f"{prefix}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
        names.update({base, f"{base}_PROTO", f"{base}_PORT", f"{base}_ADDR"})
    return names


def secret_file(pod, container, path):
    """(Secret name, key) of the file `path` if a read-only Secret volume holds it."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), {})
        secret = volume.get("secret")
        if not secret or not mount.get("readOnly"):
            return None
        for item in secret.get("items", []):
            if item["path"] == path[len(prefix):]:
                return secret["secretName"], item["key"]
    return None


def check_daemonset_mtls():
    name = "daemonset-mtls"
    documents = manifests.render(manifests.VARIANTS[name])
    rendered = kubectl_render(manifests.VARIANTS[name])
    if rendered is not None:
        ours = {(d["kind"], d["metadata"]["name"]): d for d in documents}
        theirs = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
        check(sorted(ours) == sorted(theirs), f"{name}: manifests.py renders {sorted(ours)}, kubectl {sorted(theirs)}")
        for key in theirs:
            check(ours.get(key) == theirs[key], f"{name}: manifests.py renders {key} unlike `kubectl kustomize`")
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
        check(document["kind"] in manifests.CLUSTER_SCOPED or document["metadata"].get("namespace") == "rlm",
              f"{name}: {document['kind']} {document['metadata']['name']} is not in namespace rlm")
    namespace = "rlm"
    daemonsets, deployments = by_kind.get("DaemonSet", []), by_kind.get("Deployment", [])
    check(len(daemonsets) == 1 and len(deployments) == 1, f"{name}: not one DaemonSet and one Deployment")
    if len(daemonsets) != 1 or len(deployments) != 1:
        return
    daemonset, deployment = daemonsets[0], deployments[0]
    agent_pod, orchestrator_pod = daemonset["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]
    agent_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    orchestrator_labels = deployment["spec"]["template"]["metadata"]["labels"]
    check(selects(daemonset["spec"]["selector"]["matchLabels"], agent_labels), f"{name}: DaemonSet selector does not match its pods")
    check(not selects(deployment["spec"]["selector"]["matchLabels"], agent_labels), f"{name}: the Deployment's selector matches the agent pods")

    # The agent: no host network or ports, the sidecar's privileges, TCP + mutual TLS.
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        check(not agent_pod.get(key), f"{name}: the agent pod sets {key}")
    check(agent_pod.get("automountServiceAccountToken") is False, f"{name}: the agent pod mounts a service-account token")
    check(agent_pod.get("enableServiceLinks") is False, f"{name}: the agent pod gets Service variables")
    agents = [c for c in agent_pod["containers"] if c["name"] == "sandbox-agent"]
    check(len(agents) == 1 and not agent_pod.get("initContainers"), f"{name}: the DaemonSet is not the sandbox-agent container alone")
    if len(agents) != 1:
        return
    agent = agents[0]
    check(agent["image"].split(":")[0] == "rlm-sandbox-agent", f"{name}: the DaemonSet's image is not rlm-sandbox-agent (an overlay's `images` sets it)")
    sidecar = manifests.load_kubernetes()["containers"]["sandbox-agent"]["securityContext"]
    check(agent.get("securityContext") == sidecar, f"{name}: the agent's securityContext differs from the sidecar's")
    check(all("hostPort" not in p for p in agent.get("ports", [])), f"{name}: the agent uses a hostPort")
    ports = {p["name"]: p["containerPort"] for p in agent.get("ports", [])}
    env = {e["name"]: e.get("value") for e in agent.get("env", [])}
    listen = env.get("RLM_AGENT_LISTEN", "")
    check(re.fullmatch(r"tcp://0\.0\.0\.0:\d+", listen) is not None, f"{name}: RLM_AGENT_LISTEN={listen} is not tcp://0.0.0.0:PORT")
    agent_port = int(listen.rsplit(":", 1)[1]) if ":" in listen else None
    check(agent_port in ports.values(), f"{name}: the agent listens on {agent_port}, not a declared containerPort")
    check(str(env.get("RLM_AGENT_INSECURE_TCP", "false")).lower() in ("false", "0", "no", "off"), f"{name}: the agent serves plaintext TCP")
    agent_secrets = set()
    for key in ("RLM_AGENT_TLS_CERT", "RLM_AGENT_TLS_KEY", "RLM_AGENT_TLS_CLIENT_CA"):
        found = secret_file(agent_pod, agent, env.get(key) or "")
        check(found is not None, f"{name}: {key} is not a file of a read-only Secret volume")
        if found:
            agent_secrets.add(found[0])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = agent.get(kind, {})
        port = probe.get("tcpSocket", {}).get("port")
        check(ports.get(port, port) == agent_port, f"{name}: the agent's {kind} is not a tcpSocket check of its port (gRPC probes cannot do mutual TLS)")
    check("limits" in agent.get("resources", {}), f"{name}: the agent has no resource limits")

    # The node-local Service.
    services = [s for s in by_kind.get("Service", []) if selects(s["spec"].get("selector"), agent_labels)]
    check(len(services) == 1, f"{name}: not exactly one Service selects the agent pods")
    if len(services) != 1:
        return
    service = services[0]
    service_name = service["metadata"]["name"]
    check(service["spec"].get("internalTrafficPolicy") == "Local", f"{name}: Service {service_name} is not internalTrafficPolicy: Local")
    check(not selects(service["spec"]["selector"], orchestrator_labels), f"{name}: Service {service_name} also selects orchestrators")
    service_ports = service["spec"]["ports"]
    check(len(service_ports) == 1, f"{name}: Service {service_name} must have one port (its _SERVICE_PORT variable)")
    target = service_ports[0].get("targetPort")
    check(ports.get(target, target) == agent_port, f"{name}: Service {service_name} does not target the agent's port")

    # The orchestrators: no sidecar, the Service's address, mutual TLS, readiness on /health.
    containers = orchestrator_pod.get("containers", []) + orchestrator_pod.get("initContainers", [])
    check([c["name"] for c in containers] == ["orchestrator"], f"{name}: the Deployment still has {[c['name'] for c in containers]}")
    check(all(v["name"] not in ("run", "agent-data") for v in orchestrator_pod.get("volumes", [])), f"{name}: the Deployment keeps the sidecar's volumes")
    check(orchestrator_pod.get("enableServiceLinks") is True, f"{name}: no Service variables: RLM_SANDBOX_ENDPOINT cannot be resolved")
    orchestrator = next(c for c in containers if c["name"] == "orchestrator")
    oenv = {e["name"]: e.get("value") for e in orchestrator.get("env", [])}
    prefix = service_env_prefix(service_name)
    check(oenv.get("RLM_SANDBOX_ENDPOINT") == f"tcp://$({prefix}_SERVICE_HOST):$({prefix}_SERVICE_PORT)",
          f"{name}: RLM_SANDBOX_ENDPOINT is not Service {service_name}'s address")
    check(oenv.get("RLM_SANDBOX_TLS_SERVER_NAME") == f"{service_name}.{namespace}.svc",
          f"{name}: RLM_SANDBOX_TLS_SERVER_NAME is not {service_name}.{namespace}.svc")
    check(str(oenv.get("RLM_SANDBOX_INSECURE", "false")).lower() in ("false", "0", "no", "off", ""), f"{name}: the orchestrator talks plaintext")
    client_secrets = set()
    for key in ("RLM_SANDBOX_TLS_CA", "RLM_SANDBOX_TLS_CERT", "RLM_SANDBOX_TLS_KEY"):
        found = secret_file(orchestrator_pod, orchestrator, oenv.get(key) or "")
        check(found is not None, f"{name}: {key} is not a file of a read-only Secret volume")
        if found:
            client_secrets.add(found[0])
    check(len(agent_secrets) == 1 and len(client_secrets) == 1 and agent_secrets != client_secrets,
          f"{name}: the agents' and the orchestrators' certificates must each come from one Secret of their own")
    readiness = orchestrator.get("readinessProbe", {})
    check(readiness.get("httpGet", {}).get("path") == "/health" and "grpc" not in readiness,
          f"{name}: the orchestrator's readiness is not /health (the only probe that reaches the agent)")
    check(orchestrator.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health",
          f"{name}: the orchestrator's liveness follows the agent (a missing agent would restart it)")
    documented = readme_variables()
    for other in by_kind.get("Service", []):
        clash = service_link_names(other["metadata"]["name"], other["spec"]) & documented
        check(not clash, f"{name}: Service {other['metadata']['name']} injects variables that are settings: {sorted(clash)}")

    # Network policies: only orchestrators reach the agent port; orchestrators may.
    policies = by_kind.get("NetworkPolicy", [])
    agent_policies = [p for p in policies if selects(p["spec"]["podSelector"].get("matchLabels"), agent_labels)]
    check(len(agent_policies) == 1, f"{name}: not exactly one NetworkPolicy selects the agent pods")
    for policy in agent_policies:
        check(set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, f"{name}: the agents' NetworkPolicy must restrict both directions")
        ingress = policy["spec"].get("ingress", [])
        check(ingress, f"{name}: the agents' NetworkPolicy admits nobody")
        for rule in ingress:
            peers = rule.get("from", [])
            check(peers and all(set(peer) == {"podSelector"} and selects(peer["podSelector"].get("matchLabels"), orchestrator_labels)
                                and not selects(peer["podSelector"].get("matchLabels"), agent_labels) for peer in peers),
                  f"{name}: the agents' NetworkPolicy admits more than orchestrator pods of the namespace")
            check(rule.get("ports") and all(ports.get(p["port"], p["port"]) == agent_port for p in rule["ports"]),
                  f"{name}: the agents' NetworkPolicy opens more than the agent port")
        for rule in policy["spec"].get("egress", []):
            check(rule.get("ports"), f"{name}: an agent egress rule without ports opens every port")
    orchestrator_policies = [p for p in policies if selects(p["spec"]["podSelector"].get("matchLabels"), orchestrator_labels)]
    check(any(
        any(selects(peer.get("podSelector", {}).get("matchLabels"), agent_labels) for peer in rule.get("to", []))
        and any(p["port"] == agent_port for p in rule.get("ports", []))
        for policy in orchestrator_policies for rule in policy["spec"].get("egress", [])
    ), f"{name}: the orchestrators' NetworkPolicy does not let them reach the agent port")

    # The optional cert-manager component issues exactly the mounted Secrets.
    directory = DEPLOY / "k8s" / "components" / "daemonset-mtls-cert-manager"
    issued = manifests.kustomize([], yaml.safe_load((directory / "kustomization.yaml").read_text()), directory)
    certificates = {c["spec"]["secretName"]: c for c in issued if c["kind"] == "Certificate"}
    issuers = {i["metadata"]["name"]: i for i in issued if i["kind"] == "Issuer"}
    for document in issued:
        check(document["apiVersion"] == "cert-manager.io/v1" and document["metadata"].get("namespace") == namespace,
              f"cert-manager component: {document['kind']} {document['metadata']['name']} is not cert-manager.io/v1 in {namespace}")
    (agent_secret,), (client_secret,) = agent_secrets or {None}, client_secrets or {None}
    server, client = certificates.get(agent_secret), certificates.get(client_secret)
    check(server is not None and client is not None, f"cert-manager component: no Certificate for {agent_secret} and {client_secret}")
    if server and client:
        check(f"{service_name}.{namespace}.svc" in server["spec"].get("dnsNames", []), "cert-manager component: the agents' certificate does not name the Service")
        check("server auth" in server["spec"].get("usages", []) and "client auth" not in server["spec"].get("usages", []),
              "cert-manager component: the agents' certificate is not for server auth only")
        check("client auth" in client["spec"].get("usages", []) and "server auth" not in client["spec"].get("usages", []),
              "cert-manager component: the orchestrators' certificate is not for client auth only")
        check(server["spec"]["issuerRef"] == client["spec"]["issuerRef"], "cert-manager component: the two certificates come from different issuers (each side's ca.crt must be the other's CA)")
        ca = issuers.get(server["spec"]["issuerRef"]["name"], {}).get("spec", {}).get("ca", {})
        check(ca.get("secretName") in certificates and certificates[ca["secretName"]]["spec"].get("isCA") is True,
              "cert-manager component: the issuer is not a CA issued by the component")
    if rendered is not None:
        print(f"{name}: manifests.py renders it as `kubectl kustomize` does ({len(documents)} objects)")


def main():
    facts = {"compose": manifests.load_compose({}), "kubernetes": manifests.load_kubernetes()}
    check_kustomization()
    check_kubernetes(facts["kubernetes"])
    check_compose(facts["compose"])
    check_images(facts)
    check_both(facts)
    check_components()
    check_daemonset_mtls()
    if problems:
        print("deploy/tools/check_deploy.py: %d problem(s):" % len(problems))
        for problem in problems:
            print(f"  - {problem}")
        sys.exit(1)
    objects = len(facts["kubernetes"]["objects"])
    print(f"consistency: ok ({objects} Kubernetes objects, {len(facts['compose']['services'])} compose services, 2 images)")


if __name__ == "__main__":
    main()
