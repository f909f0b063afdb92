# The README's two commands are `make demo` and `make test`; everything else supports them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help prerequisites tools services services-down services-status build build-release lint lint-deploy test test-unit demo demo-load chaos bench bench-peers

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

prerequisites: ## install the apt packages a build needs, when missing
	@scripts/prerequisites.sh

tools: ## install the checking and fault-injection tools (hadolint, kubernetes-validate, promtool, helm, toxiproxy) into .cache/
	@scripts/tools.sh

services: ## start mongod source + target replica sets and a Kafka broker on loopback (installs them into .cache/ first)
	@scripts/services.sh up

services-down: ## stop the servers `make services` started
	@scripts/services.sh down

services-status: ## say which servers run
	@scripts/services.sh status

build: prerequisites ## debug build of both services
	$(CARGO) build --workspace --all-targets

build-release: prerequisites ## optimized build of both services
	$(CARGO) build --release --bin cdc-source --bin sink-writer --bin demo

lint: prerequisites ## rustfmt, clippy (warnings are errors), ShellCheck on every script, and everything under deploy/
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@scripts/tools.sh shellcheck
	.cache/pytools/shellcheck/bin/shellcheck scripts/*.sh scripts/interop/*.sh .ci/run
	@scripts/check-deploy.sh
	@echo "lint: ok"

lint-deploy: ## hadolint, helm lint + schema validation, promtool rules/tests, ECS JSON
	@scripts/check-deploy.sh

# The second pass: every real-server suite again in the Amazon DocumentDB profile, the services
# reaching MongoDB through docdb-guard (guard-source, guard-target), which refuses what DocumentDB
# 5.0 refuses. Left out, none of them for the proxy's sake:
#   deploy_ecs  runs the services exactly as the ECS task definitions configure them (compat from
#               the endpoint's name); the profile's compat is not theirs to set
#   monitoring  promtool over the alert rules: no MongoDB
#   index_timing  a measurement, ignored unless asked for
#   secure_kafka, msk_iam  Kafka's authentication, whatever the MongoDB side: the first pass covers them
#   standby     the election is Kafka's (a consumer group on the checkpoint topic); the takeover resumes
#               from the checkpoint as every restart does, which crash and exactly_once cover here
#   chaos       five minutes of faults; `E2E_COMPAT=documentdb make chaos` runs the full fault suite
#               in the profile (the first pass runs the small one)
# secure_mongo runs in the profile against a TLS mongod of its own, directly: the guard has no TLS.
# interop's sink-writer goes through the guard; the JVM tools' own MongoDB clients do not.
E2E_DOCUMENTDB_SUITES := replication crash exactly_once apply_safety ddl_convergence renames schema trust watermarks \
	consistency_point status_blockers verify_scope dead_letters repair \
	zombie doctor service_shells secure_mongo mongodb_aws interop target_outage transforms failback

test: prerequisites tools services lint build ## everything: lint, unit, integration and end-to-end tests against real servers
	$(CARGO) test --workspace --no-fail-fast
	@echo "test: the end-to-end suite again in the Amazon DocumentDB profile, through docdb-guard"
	E2E_COMPAT=documentdb $(CARGO) test -p e2e --no-fail-fast $(addprefix --test ,$(E2E_DOCUMENTDB_SUITES))

test-unit: ## tests that need no server
	$(CARGO) test --workspace --lib

bench: prerequisites tools services build-release ## the benchmark report (N=1000000 documents; BENCH_RATE=5000 BENCH_SECONDS=30 steady run; BENCH_ONLY=burst, steady, memory, initial-sync, peers, capture, modes, transforms or wire for one scenario; the report opens with the five goals of issue 29)
	$(CARGO) build --release -p e2e --bin bench
	source .cache/services.env && target/release/bench $(or $(N),1000000)

bench-peers: prerequisites tools services build-release ## sink-writer vs the MongoDB Kafka Connector sink, cdc-source vs Debezium, same documents (N=1000000)
	$(CARGO) build --release -p e2e --bin bench
	source .cache/services.env && BENCH_ONLY=peers target/release/bench $(or $(N),1000000)

chaos: prerequisites tools services build-release ## the full fault suite: >= 1M operations, 24 faults, report (OPS= FAULTS= RATE= SEED=; CLUSTER=3: three brokers, standby cdc-source, MSK's faults, SINK_CUT=600 s; SKIP=kill-target-mongo,…)
	$(CARGO) build --release -p e2e --bin chaos
	$(if $(filter 3,$(CLUSTER)),scripts/services.sh up kafka-cluster)
	CHAOS_CLUSTER=$(CLUSTER) CHAOS_SINK_CUT_SECONDS=$(SINK_CUT) CHAOS_SKIP=$(SKIP) target/release/chaos \
	  $(or $(OPS),1000000) $(or $(FAULTS),$(if $(filter 3,$(CLUSTER)),15,24)) $(or $(RATE),5000) $(SEED)

demo: prerequisites services build-release ## servers, both services, the inventory.products scenario; Ctrl-C stops
	@scripts/demo.sh

demo-load: prerequisites services build-release ## the demo plus a steady write load (RATE=500 writes/s) to watch metrics
	@scripts/demo.sh --load $(or $(RATE),500)
