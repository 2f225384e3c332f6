#!/usr/bin/env bash
# Builds, lints and unit-tests n8n-nodes-lanes, then runs it in a real n8n 2.x against the real
# Lanes binaries (tests/tests/n8n_node.rs with LANES_N8N_TEST=1).
#
# Node 24 (the `node` npm package ships the binary) and n8n (the version pinned by
# scripts/n8n/package-lock.json) are installed from the npm registry into $LANES_N8N_CACHE
# (default ~/.cache/lanes-n8n, outside the repository so every clone reuses them) on first use.
# Needs `npm` (any version) to bootstrap, Rust, PostgreSQL's server binaries and Python 3 like
# the other end-to-end tests. Extra arguments go to `cargo test`.
#
# To move to another n8n: change scripts/n8n/package.json, then in that folder
# `npm install --package-lock-only --ignore-scripts`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${LANES_N8N_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lanes-n8n}"
node_version="${LANES_N8N_NODE_VERSION:-24.21.0}"
npm_flags=(--no-audit --no-fund --loglevel=error --prefer-offline)
started=$SECONDS

step() { printf '== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

command -v npm >/dev/null 2>&1 || {
  echo "npm is needed to install Node 24 and n8n (Debian: apt-get install nodejs npm)" >&2
  exit 1
}
mkdir -p "$cache"

step "Node.js $node_version into $cache/node24"
node_bin="$cache/node24/node_modules/.bin/node"
if ! "$node_bin" -e 'process.exit(+process.versions.node.split(".")[0] >= 24 ? 0 : 1)' 2>/dev/null; then
  rm -rf "$cache/node24"
  npm install "${npm_flags[@]}" --prefix "$cache/node24" "node@$node_version"
fi
export PATH="$cache/node24/node_modules/.bin:$PATH"
echo "node $(node --version), npm $(npm --version)"

step "n8n into $cache/n8n"
lock="$here/scripts/n8n/package-lock.json"
stamp="$(cat "$here/scripts/n8n/package.json" "$lock" | sha256sum | cut -c1-16)"
if [ "$(cat "$cache/n8n/.installed" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$cache/n8n"
  mkdir -p "$cache/n8n"
  cp "$here/scripts/n8n/package.json" "$lock" "$cache/n8n/"
  # Install scripts off: some optional native modules (Kafka, the SQLite driver) download
  # binaries or sources from outside the registry, which fails here. The test runs n8n on
  # PostgreSQL, and the native modules it needs ship prebuilt binaries in their packages.
  (cd "$cache/n8n" && npm ci "${npm_flags[@]}" --ignore-scripts)
  echo "$stamp" > "$cache/n8n/.installed"
fi
echo "n8n $(node -p "require('$cache/n8n/node_modules/n8n/package.json').version")"

step "package: install, build, lint, unit tests"
cd "$here"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # A dev dependency's preinstall runs `npx only-allow pnpm`; none needs its scripts.
  npm ci "${npm_flags[@]}" --ignore-scripts
fi
npm run build
npm run lint
npm test

step "end-to-end test in n8n (cargo test --test n8n_node)"
cd "$repo"
cargo build --workspace --bins
LANES_N8N_TEST=1 \
  LANES_N8N_NODE="$cache/node24/node_modules/.bin/node" \
  LANES_N8N_CLI="$cache/n8n/node_modules/n8n/bin/n8n" \
  LANES_N8N_PACKAGE="$here" \
  cargo test -p lanes-tests --test n8n_node "$@" -- --nocapture
step "done"
