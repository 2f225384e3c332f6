#!/usr/bin/env bash
# Chart checks for CI, with tools from PyPI only (no helm binary, no cluster, no network
# besides the package index):
#   1. helm lint --strict and helm template (Helm's Go code via helm-python-sdk) for the
#      default values, helm/lanes/values-all-on.yaml and an existing-Secrets variant, plus
#      the chart's promises (probes, hook, grace period, PDB, ...) and the values it must refuse
#      (helm/check_chart.py);
#   2. every rendered Kubernetes object validated offline with `kubernetes-validate --strict`
#      against the oldest supported and the newest Kubernetes; custom resources
#      (ServiceMonitor, ScaledObject) are validated by check_chart.py and listed.
# Exits non-zero on any failure. HELM_CHECK_VENV=DIR keeps (and reuses) the virtualenv there.
set -euo pipefail
cd "$(dirname "$0")"
start=$SECONDS

# Validated against the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate knows.
KUBE_VERSIONS=(1.27.0 latest)
PIP_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=${HELM_CHECK_VENV:-$work/venv}
pip_flags=(--quiet --disable-pip-version-check)
if [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >/dev/null 2>&1; then
  py=("$venv/bin/python")
  "${py[@]}" -m pip install "${pip_flags[@]}" "${PIP_PACKAGES[@]}"
else
  # No venv module (Debian without python3-venv): a private --target directory instead.
  echo "python3 -m venv is unavailable; installing into a private directory with pip --target"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "FAIL helm/check.sh needs python3 with venv or pip (Debian: apt-get install python3-venv)"
    exit 1
  fi
  python3 -m pip install "${pip_flags[@]}" --target "$work/site" "${PIP_PACKAGES[@]}"
  py=(env "PYTHONPATH=$work/site" python3)
fi

echo "== render, lint and promises (helm/check_chart.py)"
status=0
"${py[@]}" check_chart.py "$work/out" || status=1

echo "== kubernetes-validate --strict"
shopt -s nullglob
files=("$work"/out/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
  echo "FAIL no rendered manifests to validate"
  status=1
fi
validated=0
for f in "${files[@]}"; do
  for v in "${KUBE_VERSIONS[@]}"; do
    args=(--strict --quiet)
    [ "$v" = latest ] || args+=(-k "$v")
    if out=$("${py[@]}" -m kubernetes_validate "${args[@]}" "$f" 2>&1); then rc=0; else rc=$?; fi
    # A WARN is a kind without a schema: every custom resource was split off before, so an
    # unknown kind here is a typo in an apiVersion or kind.
    if [ $rc -ne 0 ] || grep -q . <<<"$out"; then
      echo "FAIL $(basename "$f") against Kubernetes $v:"
      sed 's/^/  /' <<<"$out"
      status=1
    else
      n=$(grep -c '^kind:' "$f")
      validated=$((validated + n))
      echo "ok   $(basename "$f"): $n objects valid against Kubernetes $v"
    fi
  done
done

elapsed=$((SECONDS - start))
if [ $status -eq 0 ]; then
  echo "helm/check.sh: chart checks passed ($validated object validations) in ${elapsed}s"
else
  echo "helm/check.sh: chart checks FAILED in ${elapsed}s"
fi
exit $status
