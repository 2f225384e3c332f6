# syntax=docker/dockerfile:1.7
# The Lanes coordinator: gRPC on 50051 (reflection + grpc.health.v1); `coordinator migrate`
# applies the schema and exits. Build from the repository root (the context is the workspace):
#   DOCKER_BUILDKIT=1 docker build -f docker/coordinator.Dockerfile -t lanes-coordinator:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: cargo reads every member's manifest, proto/build.rs compiles the .proto
# files with protox (no protoc), and sqlx::migrate!("../migrations") embeds migrations/.
COPY . .
# Registry, git and target caches persist between builds (and are shared by the four images:
# same ids). The target dir is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,id=lanes-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=lanes-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=lanes-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin coordinator \
 && install -D -m 0755 target/release/coordinator /out/coordinator \
 && strip --strip-debug /out/coordinator

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lanes \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin lanes
COPY --from=build /out/coordinator /usr/local/bin/coordinator
USER 10001:10001
ENV LOG_FORMAT=json \
    LANES_LISTEN=0.0.0.0:50051
EXPOSE 50051
# A TCP connect on the gRPC port (no grpc_health_probe in the image; Kubernetes uses its
# native gRPC probe against grpc.health.v1 instead).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/50051"]
ENTRYPOINT ["/usr/local/bin/coordinator"]
# `serve` also applies migrations; run `migrate` once per release (the Helm chart's hook Job).
CMD ["serve"]
