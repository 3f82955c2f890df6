#!/usr/bin/env bash
# Static checks of everything under deploy/ and of .github/workflows/ci.yml.
# Idempotent: the pinned tools (deploy/tools/requirements.txt) go into
# deploy/.venv once, and again only when that file changes.
#
#   1. hadolint on both Dockerfiles (every exception inline, with its reason);
#   2. shellcheck on the shell scripts;
#   3. compose.yaml against the Compose Specification schema, ci.yml against
#      the GitHub Actions workflow schema (check-jsonschema's vendored copies);
#   4. every Kubernetes manifest against the API schemas of the oldest and the
#      newest Kubernetes versions supported (kubernetes-validate --strict:
#      unknown fields are errors);
#   5. deploy/tools/check_deploy.py: kustomization.yaml lists every manifest,
#      and the files agree with each other (selectors, ports, volumes, socket,
#      capabilities, secrets...);
#   6. when kubectl is installed: `kubectl kustomize` renders deploy/k8s, alone
#      with components/tls and with components/fleet, and the DaemonSet + mutual TLS variant
#      (components/daemonset-mtls) alone, with components/tls and with its
#      cert-manager component; every output passes kubernetes-validate too
#      (cert-manager's custom resources, whose schemas it lacks, are left to
#      check_deploy.py).
# The runtime side (the binaries started with the manifests' environments and
# privileges) is tests/tests/deploy_env.rs, part of `make test`.
set -euo pipefail
deploy="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$deploy/.." && pwd)"
venv="$deploy/.venv"
requirements="$deploy/tools/requirements.txt"
# Oldest supported (appArmorProfile, native sidecars on by default) and the
# newest the pinned kubernetes-validate knows.
k8s_versions=(1.30.0 1.37.0)

step() { echo "== deploy: $*"; }

step "tools (pinned, in deploy/.venv)"
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 keeps venv in a separate package.
    rm -rf "$venv"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    python3 -m venv "$venv"
  fi
fi
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$requirements"
  echo "$wanted" >"$stamp"
fi
bin="$venv/bin"
"$bin/hadolint" --version
"$bin/shellcheck" --version | sed -n 2p
echo "kubernetes-validate $("$bin/kubernetes-validate" --version)"
"$bin/check-jsonschema" --version

step "hadolint"
for dockerfile in "$deploy"/docker/*.Dockerfile; do
  "$bin/hadolint" "$dockerfile"
  echo "ok -- ${dockerfile#"$repo"/}"
done

step "shellcheck"
"$bin/shellcheck" "$deploy/check.sh" "$deploy/docker/agent-entrypoint.sh"
echo "ok -- deploy/check.sh deploy/docker/agent-entrypoint.sh"

step "compose.yaml (Compose Specification schema)"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec "$deploy/compose.yaml"

step ".github/workflows/ci.yml (GitHub Actions workflow schema)"
"$bin/check-jsonschema" --builtin-schema vendor.github-workflows "$repo/.github/workflows/ci.yml"

step "Kubernetes manifests (kubernetes-validate --strict)"
mapfile -t manifests < <("$bin/python" -c '
import sys, yaml
for resource in yaml.safe_load(open(sys.argv[1]))["resources"]:
    print(resource)
' "$deploy/k8s/kustomization.yaml")
for version in "${k8s_versions[@]}"; do
  (cd "$deploy/k8s" && "$bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}")
  echo "ok -- ${#manifests[@]} manifests against Kubernetes $version"
done

step "consistency (deploy/tools/check_deploy.py)"
"$bin/python" "$deploy/tools/check_deploy.py"

step "kustomize build (the base, with components/tls, and the daemonset-mtls variant)"
# overlay DIR COMPONENT...: an overlay of deploy/k8s with these components in
# deploy/.venv/DIR. The variant's DaemonSet joins after deploy/k8s has set its
# images, so its overlays set the agent's image as a user's overlay would.
overlay() {
  local dir="$venv/$1" list="" component
  shift
  for component in "$@"; do list="${list:+$list, }../../k8s/components/$component"; done
  mkdir -p "$dir"
  printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
    "resources: [../../k8s]" "components: [$list]" >"$dir/kustomization.yaml"
  case " $* " in
    *" daemonset-mtls "*)
      printf '%s\n' "images:" "  - name: rlm-sandbox-agent" \
        "    newName: registry.example.com/rlm/rlm-sandbox-agent" "    newTag: 0.1.0" >>"$dir/kustomization.yaml" ;;
  esac
  echo "$dir"
}
if command -v kubectl >/dev/null; then
  targets=(
    "$deploy/k8s"
    "$(overlay tls-check tls)"
    "$(overlay daemonset-mtls-check daemonset-mtls)"
    "$(overlay daemonset-mtls-tls-check tls daemonset-mtls)"
    "$(overlay daemonset-mtls-cert-manager-check daemonset-mtls daemonset-mtls-cert-manager)"
    "$(overlay fleet-check fleet)"
  )
  for target in "${targets[@]}"; do
    rendered="$(mktemp)"
    kubectl kustomize "$target" >"$rendered"
    # cert-manager.io objects aside: kubernetes-validate has no schema for them.
    custom="$("$bin/python" -c '
import sys, yaml
documents = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in documents if not d["apiVersion"].startswith("cert-manager.io/")]
yaml.safe_dump_all(core, open(sys.argv[1], "w"), sort_keys=False)
print(len(documents) - len(core))
' "$rendered")"
    for version in "${k8s_versions[@]}"; do
      "$bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered"
    done
    note=""
    [ "$custom" = 0 ] || note=" (+ $custom cert-manager.io objects, checked by check_deploy.py)"
    echo "ok -- kubectl kustomize ${target#"$repo"/}: $(grep -c '^kind:' "$rendered") objects, valid against ${k8s_versions[*]}$note"
    rm -f "$rendered"
  done
else
  echo "skipped: kubectl is not installed (check_deploy.py checked the resource list and the variant as manifests.py renders it; the components are not rendered by kustomize)"
fi

echo "deploy/check.sh: all checks passed"
