#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
#   rustfmt check, clippy (warnings are errors), cargo deny (advisories, licences,
#   bans, sources: deny.toml), cargo test --all-targets,
# against a local Postgres and a real loopback Keystone + Glance
# (scripts/openstack), both started here if they are not running.
#
#   scripts/test.sh                       everything
#   scripts/test.sh share_flow            extra args go to `cargo test`
#   scripts/test.sh -- --nocapture
#
# DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) is an ADMIN
# connection: the tests create a fresh database per test through it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

T0=$(date +%s)
ensure_rust_tools
ensure_postgres
ensure_openstack
ensure_compute
ensure_schemathesis
ensure_pytools
ensure_promtool
ensure_chromium
ensure_cargo_deny
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
log "DATABASE_URL=$DATABASE_URL"
# Each test makes its own database; forget those of earlier runs.
if command -v psql >/dev/null 2>&1; then
  psql "$DATABASE_URL" -Atqc "select datname from pg_database where datname like 'gsb_test_%'" \
    | while read -r db; do psql "$DATABASE_URL" -qc "drop database if exists \"$db\" with (force)" >/dev/null; done
fi

run_step "cargo fmt" cargo fmt --all -- --check
run_step "cargo clippy" cargo clippy --all-targets -- -D warnings
run_step "cargo deny" check_dependencies
run_step "cargo test" cargo test --all-targets "$@"
log "all checks passed in $(( $(date +%s) - T0 ))s"
