# syntax=docker/dockerfile:1.7
# cdc-source: change streams → Kafka (source region).
# Build from the repository root:  docker build -f deploy/docker/cdc-source.Dockerfile -t cdc-source .
#
# Stages: chef (cargo-chef) → planner (dependency recipe) → build (dependencies first, cached
# while only our sources change; then the binary) → runtime (distroless, non-root, no shell).
# librdkafka and zlib are linked statically; OpenSSL comes from the runtime image.
# No HEALTHCHECK: orchestrators probe GET /health/livez and /health/readyz on port 8081.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package cdc-source
COPY . .
RUN cargo build --release --locked --package cdc-source --bin cdc-source \
    && install -D -m 0755 target/release/cdc-source /out/cdc-source

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cdc-source" \
      org.opencontainers.image.description="change streams → Kafka (source region)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/example/mongo-kafka-replicator"
COPY --from=build /out/cdc-source /usr/local/bin/cdc-source
# distroless "nonroot" user, numeric so Kubernetes runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/cdc-source"]
