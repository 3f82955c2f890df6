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
"""

import json
import re
import sys
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
            if not document or document.get("kind") != "Deployment":
                continue
            pod = document["spec"]["template"]["spec"]
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                for item in container.get("env", []):
                    check(item["name"] in documented, f"{patch.relative_to(DEPLOY)}: {item['name']} is not in README.md's table")
        kustomization = patch.parent / "kustomization.yaml"
        check(kustomization.is_file(), f"{patch.parent.relative_to(DEPLOY)} has no kustomization.yaml")


def main():
    facts = {"compose": manifests.load_compose({}), "kubernetes": manifests.load_kubernetes()}
    check_kustomization()
    check_kubernetes(facts["kubernetes"])
    check_compose(facts["compose"])
    check_images(facts)
    check_both(facts)
    check_components()
    if problems:
        print("deploy/tools/check_deploy.py: %d problem(s):" % len(problems))
        for problem in problems:
            print(f"  - {problem}")
        sys.exit(1)
    objects = len(facts["kubernetes"]["objects"])
    print(f"consistency: ok ({objects} Kubernetes objects, {len(facts['compose']['services'])} compose services, 2 images)")


if __name__ == "__main__":
    main()
