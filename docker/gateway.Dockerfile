# syntax=docker/dockerfile:1.7
# The Lanes gateway: n8n's HTTP/JSON API on 8080 (/healthz, /readyz, /metrics, /api/…).
# Build from the repository root:
#   DOCKER_BUILDKIT=1 docker build -f docker/gateway.Dockerfile -t lanes-gateway:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: cargo reads every member's manifest; proto/ is compiled by build.rs.
COPY . .
RUN --mount=type=cache,id=lanes-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=lanes-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=lanes-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin gateway \
 && install -D -m 0755 target/release/gateway /out/gateway \
 && strip --strip-debug /out/gateway

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lanes \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin lanes
COPY --from=build /out/gateway /usr/local/bin/gateway
USER 10001:10001
ENV LOG_FORMAT=json \
    LANES_GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
# GET /healthz with bash alone (no curl in the image): healthy on an HTTP 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/gateway"]
