# syntax=docker/dockerfile:1.7
# vephys coordinator image: `vephys-coordinator` and the `vephys` CLI. No libtorch, non-root.
#
#   docker build -f docker/coordinator.Dockerfile -t vephys-coordinator:0.1.0 .     # from the repo root
#
# Database migrations are embedded in the binary (sqlx::migrate!), so the image needs no
# migrations/ directory: `vephys-coordinator --migrate-only` applies them and exits.
# Checked in CI by scripts/helm-check.sh (hadolint); see docker/README.md.

# checkov:skip=CKV_DOCKER_2:Kubernetes ignores Docker HEALTHCHECK; the chart probes grpc.health.v1 natively

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
# The slim Rust image has gcc and libc6-dev, all the C the workspace's -sys crates (sqlite, ring,
# aws-lc) need; protoc comes from protoc-bin-vendored. libtorch is not linked: only the
# coordinator and CLI packages are built.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p vephys-coordinator -p vephys-cli \
    && install -D -m 0755 -t /out target/release/vephys-coordinator target/release/vephys

FROM debian:12.12-slim
ARG VEPHYS_UID=10001
RUN groupadd --system --gid "${VEPHYS_UID}" vephys \
    && useradd --system --uid "${VEPHYS_UID}" --gid vephys --home-dir /var/lib/vephys \
       --create-home --shell /usr/sbin/nologin vephys
COPY --from=build /out/ /usr/local/bin/
# SQLite (the one-machine default) lands in the working directory; Kubernetes uses Postgres.
WORKDIR /var/lib/vephys
ENV VEPHYS_LISTEN=0.0.0.0:7070 \
    VEPHYS_HTTP=0.0.0.0:7071
EXPOSE 7070 7071
USER ${VEPHYS_UID}:${VEPHYS_UID}
ENTRYPOINT ["vephys-coordinator"]
