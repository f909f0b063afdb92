#!/usr/bin/env bash
# Kafka's Admin API for the fault suite, from the broker jars services.sh installed:
# scripts/kafka/ClusterAdmin.java, compiled into .cache/kafka/admin on first use.
# Usage: scripts/kafka-admin.sh transaction-coordinator|group-coordinator|move-leaders|wait-in-sync BOOTSTRAP ARG...
#   (see ClusterAdmin.java). Prints the answer on stdout; exit 1 when it fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="$ROOT/.cache"
LIBS="$CACHE/kafka/libs"
SOURCE="$ROOT/scripts/kafka/ClusterAdmin.java"
CLASSES="$CACHE/kafka/admin"

[ -d "$LIBS" ] || { echo "kafka-admin: $LIBS is missing: run scripts/services.sh install kafka" >&2; exit 1; }
stamp="$CLASSES/.built-$(sha256sum "$SOURCE" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  rm -rf "$CLASSES"
  mkdir -p "$CLASSES"
  javac -nowarn -cp "$LIBS/*" -d "$CLASSES" "$SOURCE"
  touch "$stamp"
fi
exec java -Xmx128m -XX:TieredStopAtLevel=1 "-Dlog4j2.configurationFile=$CACHE/kafka/log4j2.properties" \
  -cp "$LIBS/*:$CLASSES" local.replicator.ClusterAdmin "$@"
