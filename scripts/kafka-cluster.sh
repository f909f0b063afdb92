# shellcheck shell=bash
# The MSK-like cluster of scripts/services.sh (sourced by it; `services.sh up kafka-cluster`):
# three Apache Kafka brokers on loopback, each a combined KRaft broker + controller, with Amazon
# MSK's defaults for what matters to replication (replication factor 3 everywhere,
# min.insync.replicas 2, no unclean leader election, no auto-created topics). The single broker
# of services.sh stays the default; the two coexist (their own ports and data directories).
#
# Every link between two brokers passes through a Toxiproxy proxy of its own, one per direction,
# for the controller quorum and for replication alike, so the fault suite can cut one broker off
# from the others while clients still reach it:
#   - broker b serves a replication listener PEERp for each broker p; broker p replicates from b
#     (and sends it transaction markers) through PEERp (`inter.broker.listener.name=PEERp`), which
#     b advertises at a proxy "peer-b-from-p" (b's own PEERb is advertised directly);
#   - broker p reaches the controller of broker b at a proxy "controller-b-from-p" (each broker's
#     static `controller.quorum.voters` names the proxies it uses);
#   - a SINK listener per broker is advertised at a proxy "sink-b": clients bootstrapping there
#     (KAFKA_CLUSTER_VIA_PROXY) stay behind the proxies, so a whole client can be cut off.
# Ports (b, p in 1..3): client 1910b, controller 1911b, SINK 1915b (advertised 1916b),
# PEERp of b 192bp (advertised 193bp through the proxy when p != b), controller of b as seen
# from p 194bp, Toxiproxy's API 19190. Logs .cache/run/kafka-cluster-b.log, data
# .cache/data/kafka-cluster-b.

CLUSTER_BROKERS=(1 2 3)
CLUSTER_TOXIPROXY_PORT=19190
CLUSTER_HEAP=${KAFKA_CLUSTER_HEAP:-384m}
CLUSTER_TOXIPROXY="$CACHE/bin/toxiproxy-server"

cluster_client_port() { echo "1910$1"; }
cluster_controller_port() { echo "1911$1"; }
cluster_sink_port() { echo "1915$1"; }
cluster_sink_proxy_port() { echo "1916$1"; }
cluster_peer_port() { echo "192$1$2"; }
# Where broker $2 reaches broker $1's PEER$2 listener.
cluster_peer_advertised_port() { if [ "$1" = "$2" ]; then echo "192$1$1"; else echo "193$1$2"; fi; }
# Where broker $2 reaches broker $1's controller.
cluster_controller_seen_from() { if [ "$1" = "$2" ]; then cluster_controller_port "$1"; else echo "194$1$2"; fi; }

cluster_bootstrap() {
  local b list=()
  for b in "${CLUSTER_BROKERS[@]}"; do list+=("127.0.0.1:$(cluster_client_port "$b")"); done
  (IFS=,; echo "${list[*]}")
}

cluster_via_proxy() {
  local b list=()
  for b in "${CLUSTER_BROKERS[@]}"; do list+=("127.0.0.1:$(cluster_sink_proxy_port "$b")"); done
  (IFS=,; echo "${list[*]}")
}

# Writes broker $1's server.properties.
write_cluster_broker_config() {
  local b=$1 p voters=() listeners advertised protocols
  for p in "${CLUSTER_BROKERS[@]}"; do voters+=("$p@127.0.0.1:$(cluster_controller_seen_from "$p" "$b")"); done
  listeners="PLAINTEXT://127.0.0.1:$(cluster_client_port "$b"),CONTROLLER://127.0.0.1:$(cluster_controller_port "$b"),SINK://127.0.0.1:$(cluster_sink_port "$b")"
  advertised="PLAINTEXT://127.0.0.1:$(cluster_client_port "$b"),SINK://127.0.0.1:$(cluster_sink_proxy_port "$b")"
  protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SINK:PLAINTEXT"
  for p in "${CLUSTER_BROKERS[@]}"; do
    listeners+=",PEER$p://127.0.0.1:$(cluster_peer_port "$b" "$p")"
    advertised+=",PEER$p://127.0.0.1:$(cluster_peer_advertised_port "$b" "$p")"
    protocols+=",PEER$p:PLAINTEXT"
  done
  mkdir -p "$CACHE/kafka-cluster"
  cat >"$CACHE/kafka-cluster/broker-$b.properties" <<EOF
process.roles=broker,controller
node.id=$b
controller.quorum.voters=$(IFS=,; echo "${voters[*]}")
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
controller.listener.names=CONTROLLER
inter.broker.listener.name=PEER$b
log.dirs=$DATA/kafka-cluster-$b
# Amazon MSK's defaults for what replication depends on.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
unclean.leader.election.enable=false
auto.create.topics.enable=false
replica.lag.time.max.ms=30000
num.partitions=1
# Fewer internal partitions than Kafka's 50, and a short log, to stay small on one machine.
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
log.retention.hours=24
log.segment.bytes=67108864
EOF
}

# Toxiproxy's proxies: every broker-to-broker link in each direction, and the client SINK links.
write_cluster_proxies() {
  local b p entries=()
  for b in "${CLUSTER_BROKERS[@]}"; do
    entries+=("{\"name\":\"sink-$b\",\"listen\":\"127.0.0.1:$(cluster_sink_proxy_port "$b")\",\"upstream\":\"127.0.0.1:$(cluster_sink_port "$b")\",\"enabled\":true}")
    for p in "${CLUSTER_BROKERS[@]}"; do
      [ "$b" = "$p" ] && continue
      entries+=("{\"name\":\"peer-$b-from-$p\",\"listen\":\"127.0.0.1:$(cluster_peer_advertised_port "$b" "$p")\",\"upstream\":\"127.0.0.1:$(cluster_peer_port "$b" "$p")\",\"enabled\":true}")
      entries+=("{\"name\":\"controller-$b-from-$p\",\"listen\":\"127.0.0.1:$(cluster_controller_seen_from "$b" "$p")\",\"upstream\":\"127.0.0.1:$(cluster_controller_port "$b")\",\"enabled\":true}")
    done
  done
  mkdir -p "$CACHE/kafka-cluster"
  (IFS=,; echo "[${entries[*]}]") >"$CACHE/kafka-cluster/proxies.json"
}

start_cluster_proxy() {
  pid_of kafka-cluster-proxy >/dev/null && return 0
  [ -x "$CLUSTER_TOXIPROXY" ] || "$ROOT/scripts/tools.sh" toxiproxy
  write_cluster_proxies
  : >"$(log_of kafka-cluster-proxy)"
  setsid "$CLUSTER_TOXIPROXY" -host 127.0.0.1 -port "$CLUSTER_TOXIPROXY_PORT" \
    -config "$CACHE/kafka-cluster/proxies.json" >>"$(log_of kafka-cluster-proxy)" 2>&1 </dev/null &
  echo $! >"$RUN/kafka-cluster-proxy.pid"
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$CLUSTER_TOXIPROXY_PORT/proxies" 2>/dev/null | grep -q "sink-1"; do
    pid_of kafka-cluster-proxy >/dev/null || fail_with_log kafka-cluster-proxy "toxiproxy exited while starting"
    [ $SECONDS -lt $deadline ] || fail_with_log kafka-cluster-proxy "toxiproxy did not answer within 30 s"
    sleep 0.2
  done
  # A proxy a fault suite left disabled would keep a broker cut off after a restart.
  local name
  for name in $(curl -fsS "http://127.0.0.1:$CLUSTER_TOXIPROXY_PORT/proxies" | grep -o '"name":"[a-z0-9-]*"' | cut -d'"' -f4); do
    curl -fsS -X POST -d '{"enabled":true}' "http://127.0.0.1:$CLUSTER_TOXIPROXY_PORT/proxies/$name" >/dev/null
  done
}

# Formats broker $1's storage once; the three share one cluster id.
format_cluster_broker() {
  local b=$1 id_file="$DATA/kafka-cluster.id"
  [ -f "$DATA/kafka-cluster-$b/meta.properties" ] && return 0
  if [ ! -f "$id_file" ]; then
    local cluster_id="-"
    while [ "${cluster_id:0:1}" = "-" ]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    echo "$cluster_id" >"$id_file"
  fi
  mkdir -p "$DATA/kafka-cluster-$b"
  java -Xmx256m -cp "$KAFKA_LIBS/*" "-Dlog4j2.configurationFile=$CACHE/kafka/log4j2.properties" \
    kafka.tools.StorageTool format --cluster-id "$(cat "$id_file")" -c "$CACHE/kafka-cluster/broker-$b.properties" \
    >"$(log_of "kafka-cluster-$b")" 2>&1 || fail_with_log "kafka-cluster-$b" "formatting broker $b's storage failed"
}

# Starts broker $1 without waiting for it (a broker waits for a controller quorum to start).
launch_cluster_broker() {
  local b=$1
  write_cluster_broker_config "$b"
  format_cluster_broker "$b"
  : >"$(log_of "kafka-cluster-$b")"
  setsid java -Xms128m "-Xmx$CLUSTER_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$CACHE/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*" \
    kafka.Kafka "$CACHE/kafka-cluster/broker-$b.properties" >>"$(log_of "kafka-cluster-$b")" 2>&1 </dev/null &
  echo $! >"$RUN/kafka-cluster-$b.pid"
}

wait_cluster_broker() {
  local b=$1 deadline=$((SECONDS + 300))
  until grep -q "Kafka Server started" "$(log_of "kafka-cluster-$b")"; do
    pid_of "kafka-cluster-$b" >/dev/null || fail_with_log "kafka-cluster-$b" "broker $b exited while starting"
    [ $SECONDS -lt $deadline ] || fail_with_log "kafka-cluster-$b" "broker $b did not start within 300 s"
    sleep 0.3
  done
}

# Starts the proxies and whichever of the brokers $@ (default all) is not running.
start_cluster() {
  local b launched=() brokers=("$@")
  [ ${#brokers[@]} -gt 0 ] || brokers=("${CLUSTER_BROKERS[@]}")
  start_cluster_proxy
  for b in "${brokers[@]}"; do
    if pid_of "kafka-cluster-$b" >/dev/null; then continue; fi
    launch_cluster_broker "$b"
    launched+=("$b")
  done
  for b in "${launched[@]}"; do wait_cluster_broker "$b"; done
}
