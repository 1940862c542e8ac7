#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md, each with its baseline measured in the same run:
#
#   1 intake      POST /v1/share-requests with wrk (32 connections, 30 s) against pgbench running
#                 the same SQL transaction at the same concurrency; GET list endpoints
#   2 fanout      one image shared with 50 projects on the real (loopback) Glance through the
#                 broker, against a loop of `openstack image add project` and the same member
#                 POSTs sent directly with one token (at 1 and at the worker's concurrency)
#   3 worker      shares granted per second against the fake Glance at 0 ms and 20 ms
#   4 footprint   RSS idle and under benchmark 1, time from start to /readyz 200
#   5 politeness  2 worker replicas under a shared limit of 20 Glance calls/s, fanning out to
#                 128 projects, against a fake Glance that enforces 20/s itself
#   6 reconcile   1,000 managed images reconciled against the fake Glance under
#                 BENCH_RECONCILE_RATE Glance calls/s (default 20, the default GSB_GLANCE_RATE_LIMIT), against the same pass
#                 with no limit
#   7 console     the approvals inbox's first page with 100,000 requests in the database, server
#                 time in-process, against the API's list and the bare SELECT of the same page
#                 (cargo bench --bench console_inbox; BENCH_INBOX="<requests> <pages>" for fewer)
#   8 history     (only when asked: BENCH_ONLY=history) BENCH_HISTORY_EVENTS audit events (default
#                 10,000,000) and a request for every ten, loaded through the write path
#                 (benches/history); then at one connection: the access reports and filtered
#                 pages against the same SQL run straight on Postgres, the NDJSON/CSV/CADF
#                 exports (with the broker's memory) against Postgres's own COPY, and
#                 `audit verify` beside sha256sum of the export's bytes. BENCH_HISTORY_REUSE=1
#                 reuses a database a previous run loaded with as many events; BENCH_HISTORY_KEEP=1
#                 keeps it afterwards (it takes tens of GB)
#
#   scripts/bench.sh                      all of them
#   BENCH_ONLY="intake worker" scripts/bench.sh
#   BENCH_SECS=10 scripts/bench.sh        shorter intake runs (BENCH_SECS per side, split
#                                         into BENCH_ROUNDS alternating turns, default 3)
#
# Installs what it needs (wrk, pgbench, curl, jq) on Debian, starts Postgres and the loopback
# Keystone + Glance like scripts/test.sh, builds the broker in release mode. Not part of CI.
# Results: printed, and appended as lines to $GSB_STATE_DIR/bench/results.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

BENCH_ONLY=${BENCH_ONLY:-intake fanout worker footprint politeness reconcile console}
BENCH_SECS=${BENCH_SECS:-30}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-32}
BENCH_FANOUT=${BENCH_FANOUT:-50}
# The broker's own default pool (GSB_DB_MAX_CONNECTIONS): 32 requests share 10 connections.
BENCH_POOL=${BENCH_POOL:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_DIR="$GSB_STATE_DIR/bench"
RESULTS="$BENCH_DIR/results.txt"
PORT=${BENCH_PORT:-18480}
B="http://127.0.0.1:$PORT"

wants() { [[ " $BENCH_ONLY " == *" $1 "* ]]; }

apt_install() { # package...
  [ "$(id -u)" -eq 0 ] || die "need $*: install them (apt-get install $*), or run as root"
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}

ensure_tools() {
  local missing=()
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  _pg_bin pgbench >/dev/null || missing+=(postgresql-contrib)
  [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
  PGBENCH=$(_pg_bin pgbench) || die "pgbench not found after installing postgresql-contrib"
}

# One line per figure: printed and kept.
result() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

# key=value from a line of key=value pairs
field() { # line key
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n 1
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

machine() {
  result "MACHINE date=$(date -u +%Y-%m-%dT%H:%M:%SZ) nproc=$(nproc) cpu=\"$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1 | tr ' ' '_')\" mem_mb=$(( $(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) / 1024 )) load=\"$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ',')\" postgres=$(psql "$DATABASE_URL" -Atc 'show server_version' | cut -d' ' -f1)"
}

# A fresh database; prints its URL.
fresh_db() { # name
  psql "$DATABASE_URL" -qc "drop database if exists $1 with (force)" >/dev/null
  psql "$DATABASE_URL" -qc "create database $1" >/dev/null
  printf '%s\n' "${DATABASE_URL%/*}/$1"
}

BROKER_PID=
SEALER_PID=
stop_broker() {
  if [ -n "$BROKER_PID" ]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
  fi
}
trap 'stop_broker; [ -z "$SEALER_PID" ] || kill "$SEALER_PID" 2>/dev/null || true' EXIT

# Starts the release broker (extra env as NAME=value args) and waits for /readyz;
# sets BROKER_PID and READY_MS (from the exec to the first 200).
start_broker() { # env assignments... -- args...
  local t0 deadline
  t0=$(date +%s%N)
  env "$@" GSB_LISTEN="127.0.0.1:$PORT" GSB_LOG_FORMAT=json RUST_LOG=warn \
    "$BIN" serve >>"$BENCH_DIR/broker.log" 2>&1 &
  BROKER_PID=$!
  deadline=$(( $(date +%s) + 30 ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$B/readyz")" = 200 ]; do
    kill -0 "$BROKER_PID" 2>/dev/null || die "the broker exited; see $BENCH_DIR/broker.log"
    [ "$(date +%s)" -lt "$deadline" ] || die "the broker was not ready within 30 s"
    sleep 0.005
  done
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

new_key() { # database-url name role
  "$BIN" keys create --database-url "$1" --name "$2" --role "$3" | tail -n 1
}

# ------------------------------------------------------------ 1 intake (+ 4 footprint)
bench_intake() {
  local url key keyhash pgurl pg line list_key round secs=$(( BENCH_SECS / BENCH_ROUNDS ))
  local api_req=0 api_secs=0 api_p50=0 api_p99=0 pg_tx=0 pg_secs=0 n
  url=$(fresh_db gsb_bench_intake)
  "$BIN" migrate --database-url "$url" >/dev/null
  key=$(new_key "$url" bench-portal requester)
  list_key=$(new_key "$url" bench-auditor auditor)
  # The ceiling's database: same schema, a key to look up. The audit events pgbench writes
  # are sealed into the chain by a broker of their own, as the API's are by the one measured.
  pgurl=$(fresh_db gsb_bench_pgbench)
  "$BIN" migrate --database-url "$pgurl" >/dev/null
  keyhash=$(printf '%s' "$(new_key "$pgurl" bench-portal requester)" | sha256sum | cut -d' ' -f1)
  env DATABASE_URL="$pgurl" GSB_NO_WORKER=true GSB_LISTEN="127.0.0.1:$(( PORT + 1 ))" RUST_LOG=warn \
    "$BIN" serve >>"$BENCH_DIR/sealer.log" 2>&1 &
  SEALER_PID=$!

  start_broker DATABASE_URL="$url" GSB_NO_WORKER=true GSB_RATE_LIMIT_PER_SEC=0 GSB_ADDRESS_RATE_LIMIT_PER_SEC=0 GSB_DB_MAX_CONNECTIONS="$BENCH_POOL"
  sleep 2
  local idle_kb ready_ms=$READY_MS
  idle_kb=$(rss_kb "$BROKER_PID" VmRSS)
  # Warm-up, not counted: the pool opens its connections (TLS, authentication) and prepares
  # its statements, as pgbench does before its clock starts.
  GSB_BENCH_KEY=$key wrk -t2 -c"$BENCH_CONNECTIONS" -d2s -s scripts/bench/intake.lua "$B/v1/share-requests" >/dev/null

  # The API and its ceiling take turns, so that both see the same load from the rest of
  # the machine.
  for round in $(seq 1 "$BENCH_ROUNDS"); do
    log "intake $round/$BENCH_ROUNDS: pgbench -M prepared -c$BENCH_CONNECTIONS -j2 -T$secs -f scripts/bench/intake.pgbench"
    pg=$("$PGBENCH" -n -M prepared -c "$BENCH_CONNECTIONS" -j 2 -T "$secs" -D keyhash="$keyhash" \
      -f scripts/bench/intake.pgbench "$pgurl" 2>&1)
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$pg")
    result "INTAKE round=$round pgbench transactions=$n secs=$secs tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$pg") latency_avg_ms=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$pg") failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$pg")"
    pg_tx=$(( pg_tx + n )); pg_secs=$(( pg_secs + secs ))

    log "intake $round/$BENCH_ROUNDS: wrk -t2 -c$BENCH_CONNECTIONS -d${secs}s POST /v1/share-requests (pool $BENCH_POOL)"
    line=$(GSB_BENCH_KEY=$key wrk -t2 -c"$BENCH_CONNECTIONS" -d"${secs}s" --timeout 10s \
      -s scripts/bench/intake.lua "$B/v1/share-requests" | grep '^WRK')
    result "INTAKE round=$round api $line"
    api_req=$(( api_req + $(field "$line" requests) ))
    api_secs=$(awk -v a="$api_secs" -v b="$(field "$line" secs)" 'BEGIN { print a + b }')
    api_p50=$(awk -v a="$api_p50" -v b="$(field "$line" p50_ms)" 'BEGIN { print (b > a ? b : a) }')
    api_p99=$(awk -v a="$api_p99" -v b="$(field "$line" p99_ms)" 'BEGIN { print (b > a ? b : a) }')
  done
  local load_kb hwm_kb api_rps pg_tps
  load_kb=$(rss_kb "$BROKER_PID" VmRSS)
  hwm_kb=$(rss_kb "$BROKER_PID" VmHWM)
  api_rps=$(awk -v r="$api_req" -v s="$api_secs" 'BEGIN { printf "%.1f", r / s }')
  pg_tps=$(awk -v r="$pg_tx" -v s="$pg_secs" 'BEGIN { printf "%.1f", r / s }')
  result "INTAKE total api_rps=$api_rps pgbench_tps=$pg_tps ratio=$(ratio "$api_rps" "$pg_tps") (target >= 0.90) worst_p50_ms=$api_p50 worst_p99_ms=$api_p99 (target <= 25)"

  # The same POSTs at light load: the latency of one request when nothing queues.
  line=$(GSB_BENCH_KEY=$key wrk -t1 -c1 -d"${secs}s" -s scripts/bench/intake.lua "$B/v1/share-requests" | grep '^WRK')
  result "INTAKE light connections=1 $line"

  for path in "/v1/share-requests?limit=50" "/v1/shares?limit=50"; do
    for c in "$BENCH_CONNECTIONS" 8 1; do
      line=$(GSB_BENCH_KEY=$list_key wrk -t"$(( c > 1 ? 2 : 1 ))" -c"$c" -d"${secs}s" -s scripts/bench/list.lua "$B$path" | grep '^WRK')
      result "LIST path=$path connections=$c $line (target p99 <= 10)"
    done
  done
  stop_broker
  kill "$SEALER_PID" 2>/dev/null || true
  wait "$SEALER_PID" 2>/dev/null || true
  SEALER_PID=

  result "FOOTPRINT ready_ms=$ready_ms (target <= 1000) idle_rss_mb=$(( idle_kb / 1024 )) (target <= 30) load_rss_mb=$(( load_kb / 1024 )) load_hwm_mb=$(( hwm_kb / 1024 )) (target <= 100)"
  psql "$DATABASE_URL" -qc "drop database if exists gsb_bench_intake with (force)" -c "drop database if exists gsb_bench_pgbench with (force)" >/dev/null
}

# ------------------------------------------------------------ 2 fan-out (real Glance)
bench_fanout() {
  local py="$OS_VENV/bin/python" fan="scripts/bench/fanout.py" url req app img ids line t0 secs
  local broker_secs raw1 raw8 cli_secs
  ids="$BENCH_DIR/projects.txt"
  log "fanout: ensuring 128 bench projects in Keystone"
  "$py" "$fan" projects 128 >"$ids"
  local targets
  targets=$(head -n "$BENCH_FANOUT" "$ids")

  url=$(fresh_db gsb_bench_fanout)
  "$BIN" migrate --database-url "$url" >/dev/null
  req=$(new_key "$url" bench-portal requester)
  app=$(new_key "$url" bench-approver approver)
  start_broker DATABASE_URL="$url" OS_CLOUD=admin GSB_GLANCE_RATE_LIMIT=0 GSB_RATE_LIMIT_PER_SEC=0 GSB_ADDRESS_RATE_LIMIT_PER_SEC=0 \
    GSB_ACCEPT_POLL_FIRST_SECS=3600 GSB_DB_MAX_CONNECTIONS=20
  img=$("$py" "$fan" image bench-fanout-broker)
  line=$("$py" "$fan" broker "$B" "$req" "$app" "$img" <<<"$targets")
  stop_broker
  result "$line glance_members=$("$py" "$fan" members "$img")"
  broker_secs=$(field "$line" secs)

  for c in 1 8; do
    img=$("$py" "$fan" image "bench-fanout-raw-$c")
    line=$("$py" "$fan" raw "$img" "$c" <<<"$targets")
    result "$line glance_members=$("$py" "$fan" members "$img")"
    [ "$c" = 1 ] && raw1=$(field "$line" secs) || raw8=$(field "$line" secs)
  done

  img=$("$py" "$fan" image bench-fanout-cli)
  log "fanout: the manual way, 1 + $BENCH_FANOUT openstack commands (this takes a while)"
  t0=$(date +%s%N)
  "$OPENSTACK_CLI" --os-cloud alice image set --shared "$img"
  for p in $targets; do
    "$OPENSTACK_CLI" --os-cloud alice image add project "$img" "$p" >/dev/null
  done
  cli_secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.3f", ns / 1e9 }')
  result "FANOUT way=cli members=$BENCH_FANOUT secs=$cli_secs glance_members=$("$py" "$fan" members "$img")"
  result "FANOUT ratio cli/broker=$(ratio "$cli_secs" "$broker_secs") (target >= 30) broker/raw_c1=$(ratio "$broker_secs" "$raw1") broker/raw_c8=$(ratio "$broker_secs" "$raw8") (target <= 1.25)"
  psql "$DATABASE_URL" -qc "drop database if exists gsb_bench_fanout with (force)" >/dev/null
}

# ------------------------------------------------------------ 3 worker, 5 politeness, 6 reconcile (fake Glance)
bench_cargo() { # bench args...
  local out
  out=$(cargo bench -q --bench worker -- "$@" 2>>"$BENCH_DIR/cargo-bench.log" | grep '^RESULT')
  result "$out"
}

# ------------------------------------------------------------ 7 history at scale
verdict() { # measured op target: PASS when measured op target holds
  awk -v m="$1" -v t="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? (m <= t) : (m >= t); print (ok ? "PASS" : "FAIL") }'
}

load_average() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' ','; }

# The broker's peak memory while it exports one format: VmRSS sampled every 100 ms, and
# VmHWM at the end (the broker is started for each export, so the peak is the export's).
history_export() { # url key format
  local url=$1 key=$2 format=$3 file="$BENCH_DIR/history/export.$3" t0 secs events rss peak=0 hwm
  start_broker DATABASE_URL="$url" GSB_NO_WORKER=true GSB_RATE_LIMIT_PER_SEC=0 GSB_ADDRESS_RATE_LIMIT_PER_SEC=0
  t0=$(date +%s%N)
  curl -sS --fail -H "Authorization: Bearer $key" "$B/v1/audit-events?format=$format" -o "$file" &
  local curl_pid=$!
  while kill -0 "$curl_pid" 2>/dev/null; do
    rss=$(rss_kb "$BROKER_PID" VmRSS)
    [ "$rss" -le "$peak" ] || peak=$rss
    sleep 0.1
  done
  wait "$curl_pid" || die "the $format export failed"
  secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.2f", ns / 1e9 }')
  hwm=$(rss_kb "$BROKER_PID" VmHWM)
  stop_broker
  events=$(wc -l <"$file")
  [ "$format" != csv ] || events=$(( events - 1 ))
  local rate
  rate=$(awk -v n="$events" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  result "HISTORY export format=$format events=$events bytes=$(stat -c %s "$file") secs=$secs events_per_sec=$rate (target >= 100000) $(verdict "$rate" ">=" 100000) max_rss_mb=$(( peak / 1024 )) hwm_mb=$(( hwm / 1024 )) (target <= 100) $(verdict "$(( hwm / 1024 ))" "<=" 100) load=$(load_average)"
}

bench_history() {
  local events=${BENCH_HISTORY_EVENTS:-10000000} url key loaded=0 t0 secs line
  mkdir -p "$BENCH_DIR/history"
  url="${DATABASE_URL%/*}/gsb_bench_history"
  # A database loaded before has a few more events than it was loaded with (the keys made
  # to read it, their audit events): reused when it has at least as many.
  if [ "${BENCH_HISTORY_REUSE:-0}" = 1 ] \
    && [ "$(psql "$url" -Atc 'select count(*) from audit_events where chain_pos is not null' 2>/dev/null || echo 0)" -ge "$events" ]; then
    log "history: reusing gsb_bench_history ($events events)"
    "$BIN" migrate --database-url "$url" >/dev/null
    loaded=1
  fi
  if [ "$loaded" = 0 ]; then
    [ "${BENCH_HISTORY_REUSE:-0}" != 1 ] || [ -z "$(psql "$url" -Atc 'select 1 from audit_events limit 1' 2>/dev/null)" ] \
      || die "history: BENCH_HISTORY_REUSE=1 but gsb_bench_history holds fewer than $events events; drop it (or set BENCH_HISTORY_EVENTS) to load anew"
    url=$(fresh_db gsb_bench_history)
    log "history: loading $events events (this takes a while: see docs/benchmarks.md)"
    line=$(BENCH_HISTORY_EVENTS=$events cargo bench -q --bench history -- load "$url" 2>>"$BENCH_DIR/cargo-bench.log" | grep '^RESULT')
    result "$line load=$(load_average)"
  fi
  key=$(new_key "$url" "bench-history-auditor-$(date +%s)" auditor)

  # Reads, each against its SQL run straight on Postgres, at one connection.
  start_broker DATABASE_URL="$url" GSB_NO_WORKER=true GSB_RATE_LIMIT_PER_SEC=0 GSB_ADDRESS_RATE_LIMIT_PER_SEC=0
  cargo bench -q --bench history -- measure "$B" "$key" "$url" 2>>"$BENCH_DIR/cargo-bench.log" | grep '^RESULT' \
    | while IFS= read -r line; do result "$line"; done
  stop_broker

  # Exports, against Postgres's own COPY of the same rows in the same order.
  t0=$(date +%s%N)
  psql "$url" -qc "\\copy (select * from audit_events where chain_pos is not null order by chain_pos) to '/dev/null'"
  secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.2f", ns / 1e9 }')
  result "HISTORY copy (baseline) events=$events secs=$secs events_per_sec=$(awk -v n="$events" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') load=$(load_average)"
  for format in ndjson csv cadf; do history_export "$url" "$key" "$format"; done

  # audit verify (the command line), beside sha256sum of the NDJSON export's bytes.
  local out rate sha_secs
  t0=$(date +%s%N)
  out=$("$BIN" audit verify --database-url "$url") || die "audit verify failed: $out"
  secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.2f", ns / 1e9 }')
  rate=$(awk -v n="$events" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  t0=$(date +%s%N)
  sha256sum "$BENCH_DIR/history/export.ndjson" >/dev/null
  sha_secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.2f", ns / 1e9 }')
  result "HISTORY verify events=$events secs=$secs events_per_sec=$rate (target >= 200000) $(verdict "$rate" ">=" 200000) said=\"$(head -n 1 <<<"$out" | cut -d';' -f1)\" sha256sum_bytes=$(stat -c %s "$BENCH_DIR/history/export.ndjson") sha256sum_secs=$sha_secs sha256sum_events_per_sec=$(awk -v n="$events" -v s="$sha_secs" 'BEGIN { printf "%.0f", n / s }') (the physical bound) load=$(load_average)"

  rm -f "$BENCH_DIR"/history/export.*
  [ "${BENCH_HISTORY_KEEP:-0}" = 1 ] || psql "$DATABASE_URL" -qc "drop database if exists gsb_bench_history with (force)" >/dev/null
}

# ------------------------------------------------------------ main
ensure_rust_tools
ensure_postgres
ensure_openstack
ensure_tools
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export PGOPTIONS="-c client_min_messages=warning"
mkdir -p "$BENCH_DIR"
: >"$BENCH_DIR/broker.log"
run_step "cargo build --release" cargo build --release --quiet
run_step "cargo bench --no-run" cargo bench --quiet --bench worker --bench history --no-run
BIN="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/glance-share-broker"

machine
if wants intake || wants footprint; then bench_intake; fi
if wants fanout; then bench_fanout; fi
if wants worker; then
  bench_cargo throughput 0
  bench_cargo throughput 20
fi
if wants politeness; then bench_cargo politeness 20; fi
if wants reconcile; then bench_cargo reconcile "${BENCH_RECONCILE_RATE:-20}"; fi
if wants console; then
  # shellcheck disable=SC2086 # BENCH_INBOX is two numbers, or nothing
  cargo bench -q --bench console_inbox -- ${BENCH_INBOX:-} 2>>"$BENCH_DIR/cargo-bench.log" | tee -a "$BENCH_DIR/console.txt" |
    grep '^RESULT' | while read -r line; do result "$line"; done
fi
if wants history; then bench_history; fi
result "DONE load=\"$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ',')\""
