#!/usr/bin/env bash
# Builds, lints and unit-tests n8n-nodes-lanes, then runs it in a real n8n 2.x against the real
# Lanes binaries (tests/tests/n8n_node.rs with LANES_N8N_TEST=1).
#
# Node 24 (the `node` npm package ships the binary) and n8n are installed from the npm registry
# into integrations/n8n/.cache/ (git-ignored) on first use and reused afterwards. Needs `npm`
# (any version) to bootstrap, Rust, PostgreSQL's server binaries and Python 3 like the other
# end-to-end tests. Extra arguments go to `cargo test`.
#
#   LANES_N8N_VERSION   n8n version to test against (default below)
#   LANES_N8N_NODE_VERSION  Node.js major or exact version (default 24)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="$here/.cache"
n8n_version="${LANES_N8N_VERSION:-2.41.1}"
node_version="${LANES_N8N_NODE_VERSION:-24}"
npm_flags=(--no-audit --no-fund --loglevel=error)
started=$SECONDS

step() { printf '== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

command -v npm >/dev/null 2>&1 || {
  echo "npm is needed to install Node 24 and n8n (Debian: apt-get install nodejs npm)" >&2
  exit 1
}

step "Node.js $node_version"
node_bin="$cache/node24/node_modules/.bin/node"
if ! "$node_bin" -e 'process.exit(+process.versions.node.split(".")[0] >= 24 ? 0 : 1)' 2>/dev/null; then
  rm -rf "$cache/node24"
  npm install "${npm_flags[@]}" --prefix "$cache/node24" "node@$node_version"
fi
export PATH="$cache/node24/node_modules/.bin:$PATH"
echo "node $(node --version), npm $(npm --version)"

step "n8n $n8n_version"
installed="$(node -p "require('$cache/n8n/node_modules/n8n/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$n8n_version" ]; then
  rm -rf "$cache/n8n"
  mkdir -p "$cache/n8n"
  # Install scripts off: some optional native modules (Kafka, the SQLite driver) download
  # prebuilt binaries or sources from outside the registry, which fails here. The test runs
  # n8n on PostgreSQL, and the modules it needs ship their binaries in their npm packages.
  npm install "${npm_flags[@]}" --ignore-scripts --prefix "$cache/n8n" "n8n@$n8n_version"
fi

step "package: install, build, lint, unit tests"
cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # One dev dependency's preinstall script calls `npx only-allow pnpm`; nothing needs scripts.
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
