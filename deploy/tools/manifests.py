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
                                        "sidecar": bool}}},
   "variants": {NAME: {"components": [...], "namespace": NS,
                       "objects": [{"kind", "name", "namespace"}],
                       "services": {NAME: spec}, "networkPolicies": {NAME: spec},
                       "workloads": {KIND: {NAME: {"labels": {...}, "pod": {...},
                                                   "containers": {NAME: {...}}}}}}}}

A variant is deploy/k8s with some of its components (VARIANTS below), rendered
here the way `kubectl kustomize` renders an overlay of them (render(): the
subset of kustomize the components use; check_deploy.py compares the two
whenever kubectl is installed), so the tests need no kubectl.

Compose `${VAR}` forms are resolved as `docker compose` does with an empty
environment: `${VAR:-default}` / `${VAR-default}` give the default, `${VAR}`
gives "", `$$` is a literal `$`; `${VAR:?message}` with VAR unset is an error.
Needs PyYAML.
"""

import copy
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


# Variants: deploy/k8s plus these components (under deploy/k8s/components/).
VARIANTS = {"daemonset-mtls": ["daemonset-mtls"]}

# Kinds kustomize's namespace transformer leaves alone (among those used here).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer", "PriorityClass"}

# Strategic-merge keys of the lists the components patch (as in the API's
# patchMergeKey); other lists are replaced whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


def strategic_merge(base, patch):
    """A strategic-merge patch as kustomize applies it: maps merge, `null`
    deletes a key, lists with a merge key merge by it (`$patch: delete` drops
    an item; patched and added items come first, in the patch's order, then
    the untouched ones), other lists are replaced."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = strategic_merge(result[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            merge_key = MERGE_KEYS[key]
            old = {item[merge_key]: item for item in result[key]}
            merged, touched = [], set()
            for item in value:
                touched.add(item[merge_key])
                if item.get("$patch") == "delete":
                    continue
                merged.append(strategic_merge(old[item[merge_key]], item) if item[merge_key] in old else copy.deepcopy(item))
            merged += [item for item in result[key] if item[merge_key] not in touched]
            result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def json_patch(document, operations):
    """RFC 6902 `add`, `replace` and `remove` (what the components use)."""
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        op = operation["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, copy.deepcopy(operation["value"]))
            elif op == "replace":
                node[index] = copy.deepcopy(operation["value"])
            elif op == "remove":
                del node[index]
            else:
                raise SystemExit(f"json patch: unsupported op {op}")
        elif op in ("add", "replace"):
            node[last] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[last]
        else:
            raise SystemExit(f"json patch: unsupported op {op}")
    return document


def targets(document, target):
    return all(
        (document["metadata"]["name"] if key == "name" else document.get(key)) == value
        for key, value in target.items()
    )


def set_images(document, images):
    pod = document.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
        tag = container["image"][len(name) :]
        for entry in images:
            if entry["name"] == name:
                container["image"] = entry.get("newName", name) + (f":{entry['newTag']}" if "newTag" in entry else tag)


def kustomize(documents, kustomization, directory):
    """Adds a kustomization's (or component's) resources and applies its
    patches, then its namespace and images, to `documents`."""
    own = []
    for resource in kustomization.get("resources", []):
        own += [d for d in yaml.safe_load_all((directory / resource).read_text()) if d]
    documents = documents + own
    for entry in kustomization.get("patches", []):
        patch = yaml.safe_load((directory / entry["path"]).read_text() if "path" in entry else entry["patch"])
        for i, document in enumerate(documents):
            if targets(document, entry["target"]):
                documents[i] = json_patch(copy.deepcopy(document), patch) if isinstance(patch, list) else strategic_merge(document, patch)
    for document in documents:
        if "namespace" in kustomization and document["kind"] not in CLUSTER_SCOPED:
            document["metadata"]["namespace"] = kustomization["namespace"]
        set_images(document, kustomization.get("images", []))
    return documents


def render(components):
    """deploy/k8s with `components`, as `kubectl kustomize` renders an overlay
    `{resources: [deploy/k8s], components: [...]}`."""
    k8s = DEPLOY / "k8s"
    documents = kustomize([], yaml.safe_load((k8s / "kustomization.yaml").read_text()), k8s)
    for component in components:
        directory = k8s / "components" / component
        documents = kustomize(documents, yaml.safe_load((directory / "kustomization.yaml").read_text()), directory)
    return documents


def workload_summary(document):
    template = document["spec"]["template"]
    pod = template["spec"]
    containers = {}
    for container in pod.get("initContainers", []):
        containers[container["name"]] = container_summary(container, container.get("restartPolicy") == "Always")
    for container in pod.get("containers", []):
        containers[container["name"]] = container_summary(container, False)
    return {
        "labels": template["metadata"].get("labels", {}),
        "pod": {
            "securityContext": pod.get("securityContext", {}),
            "volumes": {v["name"]: v for v in pod.get("volumes", [])},
            "terminationGracePeriodSeconds": pod.get("terminationGracePeriodSeconds"),
            "enableServiceLinks": pod.get("enableServiceLinks", True),
            "hostNetwork": pod.get("hostNetwork", False),
            "initContainers": [c["name"] for c in pod.get("initContainers", [])],
        },
        "containers": containers,
    }


def load_variant(name):
    documents = render(VARIANTS[name])
    namespace = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text()).get("namespace")
    workloads = {}
    for document in documents:
        if document["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            workloads.setdefault(document["kind"], {})[document["metadata"]["name"]] = workload_summary(document)
    return {
        "components": VARIANTS[name],
        "namespace": namespace,
        "objects": [
            {"kind": d["kind"], "name": d["metadata"]["name"], "namespace": d["metadata"].get("namespace")}
            for d in documents
        ],
        "services": {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Service"},
        "networkPolicies": {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "NetworkPolicy"},
        "workloads": workloads,
    }


def main():
    try:
        result = {"compose": load_compose({}), "kubernetes": load_kubernetes()}
        result["variants"] = {name: load_variant(name) for name in VARIANTS}
    except InterpolationError as err:
        raise SystemExit(f"deploy/compose.yaml: {err}")
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
