# syntax=docker/dockerfile:1.7
# The Lanes agent plus Python 3, for the users' import scripts (`--exec "python3 import.py"`).
# Build from the repository root:
#   DOCKER_BUILDKIT=1 docker build -f docker/agent-python.Dockerfile -t lanes-agent-python:0.1.0 .
#
# Add your script and its dependencies in a derived image:
#   FROM lanes-agent-python:0.1.0
#   USER root
#   COPY requirements.txt /app/
#   RUN pip install --no-cache-dir -r /app/requirements.txt
#   COPY import.py /app/
#   USER 10001:10001
# and run it with LANES_EXEC="python3 /app/import.py" (the Helm chart's agent.exec).
# agent/examples/*.py are in /app/examples for a first try.

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

# Debian bookworm underneath (the same glibc the binary was built against), with the
# official CPython, so a derived image can `pip install` without fighting the system Python.
FROM python:3.12-slim-bookworm
# tini is PID 1: it forwards SIGTERM to the agent (which drains) and reaps the orphans of
# handler process trees (a script's own subprocesses), so no zombies pile up.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lanes \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/lanes \
      --shell /usr/sbin/nologin lanes
COPY --from=build /out/agent /usr/local/bin/agent
COPY agent/examples/ /app/examples/
USER 10001:10001
WORKDIR /app
# Handlers run with a read-only root filesystem in the Helm chart: no .pyc writes, unbuffered
# output so progress lines reach the agent at once.
ENV LOG_FORMAT=json \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/agent"]
