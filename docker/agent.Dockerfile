# syntax=docker/dockerfile:1.7
# The Lanes agent, for HTTP handlers (`--http`) or a handler binary you add in a derived image.
# For Python import scripts use docker/agent-python.Dockerfile. Build from the repository root:
#   DOCKER_BUILDKIT=1 docker build -f docker/agent.Dockerfile -t lanes-agent:0.1.0 .
# Configure it with environment variables (LANES_COORDINATOR, LANES_QUEUES, LANES_TOKEN,
# LANES_EXEC or LANES_HTTP, LANES_GRACE_PERIOD_SECS; README "Agents: running your import").

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: cargo reads every member's manifest; proto/ is compiled by build.rs.
COPY . .
RUN --mount=type=cache,id=lanes-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=lanes-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=lanes-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin agent \
 && install -D -m 0755 target/release/agent /out/agent \
 && strip --strip-debug /out/agent

FROM debian:bookworm-slim
# tini is PID 1: it forwards SIGTERM to the agent (which drains) and reaps the orphans of
# handler process trees, so no zombies pile up in a long-lived pod.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lanes \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/lanes \
      --shell /usr/sbin/nologin lanes
COPY --from=build /out/agent /usr/local/bin/agent
USER 10001:10001
WORKDIR /home/lanes
ENV LOG_FORMAT=json
# No port and no HEALTHCHECK: the agent serves nothing; it dials the coordinator, and its
# liveness is its WakeStream (the coordinator lists it: AdminService/ListAgents).
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/agent"]
