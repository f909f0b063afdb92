#!/usr/bin/env bash
# Installs the real tools the interop tests run (tests/e2e/tests/interop.rs), all pinned and from
# Maven Central, into .cache/interop/ (local Maven repository .cache/m2, as services.sh does):
#   connect-mkc/libs       Kafka Connect 4.4.0 + MongoDB Kafka Connector 2.0.1
#   connect-debezium/libs  Kafka Connect 4.1.1 + Debezium MongoDB connector 3.6.1.Final
#   flink/libs             Flink 2.2.1 (table planner, json, flink-connector-kafka 5.0.0-2.2)
#                          flink/classes: our small SQL runner (flink/src)
# Idempotent: each part is redone only when its pom (or the runner's source) changed. Safe to
# call from parallel tests: one install at a time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/scripts/interop"
CACHE="$ROOT/.cache"
OUT="$CACHE/interop"
M2="$CACHE/m2"
say() { printf 'interop-install: %s\n' "$*" >&2; }

apt_install() {
  [ "$(id -u)" -eq 0 ] || { say "missing $*: install them as root"; exit 1; }
  say "installing apt packages: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

mvn_q() { mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$M2" "$@"; }

# The jars of one pom's runtime scope into $OUT/<name>/libs.
resolve() {
  local name=$1 stamp
  stamp="$OUT/$name/.resolved-$(sha256sum "$HERE/$name/pom.xml" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  say "resolving $name from Maven Central into .cache/interop/$name/libs"
  rm -rf "${OUT:?}/${name:?}"
  mkdir -p "$OUT/$name"
  mvn_q -f "$HERE/$name/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$OUT/$name/libs"
  touch "$stamp"
}

# The runner is one class: javac against the resolved jars, no Maven build plugins to fetch.
build_flink_runner() {
  local stamp
  stamp="$OUT/flink/.built-$(cat "$HERE/flink/pom.xml" "$HERE"/flink/src/main/java/interop/*.java | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  say "compiling the Flink SQL runner"
  rm -rf "$OUT/flink/classes"
  javac -nowarn --release 17 -cp "$OUT/flink/libs/*" -d "$OUT/flink/classes" "$HERE"/flink/src/main/java/interop/*.java
  rm -f "$OUT"/flink/.built-*
  touch "$stamp"
}

command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
command -v mvn >/dev/null || apt_install maven
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
resolve connect-mkc
resolve connect-debezium
resolve flink
build_flink_runner
say "ready"
