#!/usr/bin/env python3
"""What deploy/compose.yaml and deploy/k8s/ ask of the binaries, as JSON.

Prints one JSON object on stdout, read by tests/tests/deploy_env.rs (which then
starts the real binaries with exactly these environments) and by
deploy/tools/check_deploy.py:

  {"compose": {"interpolated": [VAR, ...],
               "services": {NAME: {"environment": {K: V}, "cap_add": [...],
                                   "cap_drop": [...], "user": "U:G",
                                   "healthcheck": [argv], "security_opt": [...],
                                   "volumes": [...], "read_only": bool}}},
   "kubernetes": {"pod": {"fsGroup": N, ...},
                  "containers": {NAME: {"environment": {K: V}, "secrets": {K: "secret/key"},
                                        "capabilities": [...], "securityContext": {...},
                                        "probes": {KIND: {...}}, "mounts": {...},
                                        "sidecar": bool}}}}

Compose `${VAR}` forms are resolved as `docker compose` does with an empty
environment: `${VAR:-default}` / `${VAR-default}` give the default, `${VAR}`
gives "", `$$` is a literal `$`; `${VAR:?message}` with VAR unset is an error.
Needs PyYAML.
"""

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent

# ${NAME}, ${NAME:-x}, ${NAME-x}, ${NAME:?x}, ${NAME?x}, ${NAME:+x}, ${NAME+x}, $NAME, $$
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text, env, seen):
    """Resolves compose interpolation in `text` against `env` (a dict)."""

    def substitute(match):
        if match.group("escaped") is not None:
            return "$"
        if match.group("invalid") is not None:
            raise InterpolationError(f"invalid interpolation in {text!r}")
        name = match.group("braced") or match.group("named")
        seen.add(name)
        op = match.group("op")
        arg = match.group("arg") or ""
        value = env.get(name)
        if op is None:
            return value or ""
        empty_counts = op.startswith(":")
        missing = value is None or (empty_counts and value == "")
        kind = op[-1]
        if kind == "-":
            return interpolate(arg, env, seen) if missing else value
        if kind == "?":
            if missing:
                raise InterpolationError(f"${{{name}}} is required: {arg}")
            return value
        # "+": the alternative when set
        return "" if missing else interpolate(arg, env, seen)

    return INTERPOLATION.sub(substitute, text)


def interpolate_tree(node, env, seen):
    if isinstance(node, str):
        return interpolate(node, env, seen)
    if isinstance(node, list):
        return [interpolate_tree(item, env, seen) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env, seen) for key, value in node.items()}
    return node


def dockerfile_instructions(path):
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    lines, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        yield instruction.upper(), arguments.strip()


def image_facts(dockerfile):
    """The final stage's ENV, HEALTHCHECK command and ENTRYPOINT of a Dockerfile."""
    env, healthcheck, entrypoint = {}, [], []
    for instruction, arguments in dockerfile_instructions(DEPLOY / "docker" / dockerfile):
        if instruction == "FROM":
            env, healthcheck, entrypoint = {}, [], []
        elif instruction == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
        elif instruction == "HEALTHCHECK":
            command = arguments[arguments.index("CMD ") + 4 :]
            healthcheck = json.loads(command)
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(arguments)
    return {"env": env, "healthcheck": healthcheck, "entrypoint": entrypoint}


def dockerfile_of_image(image):
    """deploy/docker/<name>.Dockerfile for an image named [registry/]rlm-<name>:tag."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0]
    return name.removeprefix("rlm-") + ".Dockerfile"


def scalar(value):
    """Compose and Kubernetes environment values as the process sees them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compose_environment(environment):
    if environment is None:
        return {}
    if isinstance(environment, list):
        pairs = {}
        for item in environment:
            key, _, value = str(item).partition("=")
            pairs[key] = value
        return pairs
    return {key: scalar(value) for key, value in environment.items()}


def healthcheck_argv(healthcheck):
    test = (healthcheck or {}).get("test")
    if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
        return test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", " ".join(test[1:])]
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    return []


def load_compose(env):
    raw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    seen = set()
    resolved = interpolate_tree(raw, env, seen)
    services = {}
    for name, service in resolved.get("services", {}).items():
        services[name] = {
            "environment": compose_environment(service.get("environment")),
            "cap_add": service.get("cap_add", []),
            "cap_drop": service.get("cap_drop", []),
            "user": scalar(service.get("user")),
            "healthcheck": healthcheck_argv(service.get("healthcheck")),
            "security_opt": service.get("security_opt", []),
            "volumes": service.get("volumes", []),
            "read_only": bool(service.get("read_only", False)),
            "network_mode": service.get("network_mode"),
            "depends_on": service.get("depends_on", {}),
            "deploy": service.get("deploy", {}),
            "ports": service.get("ports", []),
            "dockerfile": Path(service.get("build", {}).get("dockerfile", "")).name,
            "image_facts": image_facts(Path(service["build"]["dockerfile"]).name),
        }
    return {
        "interpolated": sorted(seen),
        "services": services,
        "volumes": resolved.get("volumes", {}),
    }


def k8s_documents():
    """Every document of every manifest that kustomization.yaml lists."""
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization.get("resources", []):
        for document in yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()):
            if document:
                yield resource, document


def container_summary(container, sidecar):
    environment, secrets = {}, {}
    for item in container.get("env", []):
        if "value" in item:
            environment[item["name"]] = scalar(item["value"])
        elif "valueFrom" in item and "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            secrets[item["name"]] = f"{ref['name']}/{ref['key']}"
        else:
            environment[item["name"]] = None
    security = container.get("securityContext", {})
    return {
        "environment": environment,
        "secrets": secrets,
        "capabilities": security.get("capabilities", {}).get("add", []),
        "dropped": security.get("capabilities", {}).get("drop", []),
        "securityContext": security,
        "probes": {
            kind: container[kind]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in container
        },
        "mounts": {m["mountPath"]: m for m in container.get("volumeMounts", [])},
        "ports": {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])},
        "sidecar": sidecar,
        "image": container.get("image"),
        "dockerfile": dockerfile_of_image(container["image"]),
        "image_facts": image_facts(dockerfile_of_image(container["image"])),
    }


def load_kubernetes():
    objects = []
    deployment = None
    for resource, document in k8s_documents():
        objects.append({"file": resource, "kind": document["kind"], "name": document["metadata"]["name"]})
        if document["kind"] == "Deployment":
            deployment = document
    if deployment is None:
        raise SystemExit("deploy/k8s: no Deployment among the kustomization's resources")
    pod = deployment["spec"]["template"]["spec"]
    containers = {}
    for container in pod.get("initContainers", []):
        containers[container["name"]] = container_summary(
            container, container.get("restartPolicy") == "Always"
        )
    for container in pod.get("containers", []):
        containers[container["name"]] = container_summary(container, False)
    return {
        "objects": objects,
        "pod": {
            "securityContext": pod.get("securityContext", {}),
            "volumes": {v["name"]: v for v in pod.get("volumes", [])},
            "terminationGracePeriodSeconds": pod.get("terminationGracePeriodSeconds"),
            "labels": deployment["spec"]["template"]["metadata"].get("labels", {}),
        },
        "containers": containers,
    }


def main():
    try:
        result = {"compose": load_compose({}), "kubernetes": load_kubernetes()}
    except InterpolationError as err:
        raise SystemExit(f"deploy/compose.yaml: {err}")
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
