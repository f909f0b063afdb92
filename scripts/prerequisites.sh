#!/usr/bin/env bash
# Installs, when missing, what building the workspace needs on a fresh Debian 12 machine:
# a C toolchain for librdkafka (built from source by rdkafka-sys), OpenSSL and zlib headers,
# Python (replica-set setup), Java and Maven (the Kafka broker). Rust itself comes from rustup.
set -euo pipefail

need=()
for pkg in build-essential pkg-config libssl-dev zlib1g-dev libcurl4 libssl3 liblzma5 python3 python3-pip curl openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "prerequisites: missing ${need[*]}: install them as root" >&2; exit 1; }
  echo "prerequisites: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "prerequisites: cargo not found: install Rust with rustup" >&2; exit 1; }
