# shellcheck shell=bash
# Shared helpers for scripts/test.sh, scripts/dev.sh and .ci/run. Source it:
#
#   . "$(dirname "$0")/lib.sh"
#
# Functions (each safe under `set -euo pipefail`, each idempotent):
#   ensure_rust_tools   cargo present; rustfmt + clippy components installed
#   ensure_postgres     something answers on $GSB_PG_HOST:$GSB_PG_PORT
#   ensure_openstack    loopback Keystone + Glance installed, started, seeded (not seeded
#                       again when GSB_OPENSTACK_SEED=0 and it was seeded before);
#                       exports everything in $OS_STATE/env.sh and seed.env
#   ensure_compute      real Nova + Placement + Cinder beside them (after ensure_openstack);
#                       exports NOVA_URL, CINDER_URL
#   ensure_schemathesis schemathesis (pinned) in its own venv; exports SCHEMATHESIS
#   ensure_pytools      the standards' own Python libraries (pinned: pycadf, standardwebhooks,
#                       prometheus_client, openapi-spec-validator, PyYAML) in a venv;
#                       exports GSB_PYTHON (the tests' scripts in tests/py run with it)
#   ensure_promtool     Prometheus's promtool (Debian's prometheus package, unpacked, never
#                       installed as a service); exports PROMTOOL
#   ensure_cargo_deny   cargo-deny (pinned) in ~/.cargo/bin
#   check_dependencies  cargo deny check (deny.toml); advisories as the network allows
#
# Settings (environment):
#   GSB_STATE_DIR   runtime state (default ${TMPDIR:-/tmp}/glance-share-broker)
#   GSB_PG_HOST     default 127.0.0.1
#   GSB_PG_PORT     default 5432
#   GSB_PG_MODE     auto (default): running server, else the Debian cluster
#                   (pg_ctlcluster), else apt-get install postgresql, else initdb;
#                   initdb: skip the Debian cluster/apt steps and use a private
#                   cluster in $GSB_STATE_DIR/postgres
#   GSB_PG_WAIT     seconds to wait for Postgres to answer (default 60)

GSB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GSB_STATE_DIR=${GSB_STATE_DIR:-${TMPDIR:-/tmp}/glance-share-broker}
export GSB_ROOT GSB_STATE_DIR

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

# Run "$@" as a numbered step; stop the whole script with a clear message if it fails.
run_step() { # label, command...
  local label=$1 t0 rc=0
  shift
  log "$label: $*"
  t0=$(date +%s)
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    die "$label FAILED (exit $rc, after $(( $(date +%s) - t0 ))s): $*"
  fi
  log "$label: ok ($(( $(date +%s) - t0 ))s)"
}

# ---------------------------------------------------------------- Rust tools
ensure_rust_tools() {
  command -v cargo >/dev/null 2>&1 \
    || die "cargo not found on PATH; install Rust (https://rustup.rs) or add ~/.cargo/bin to PATH"
  local missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if [ "${#missing[@]}" -gt 0 ]; then
    command -v rustup >/dev/null 2>&1 \
      || die "cargo ${missing[*]} missing and rustup not found; install the ${missing[*]} component(s)"
    log "rustup component add ${missing[*]}"
    rustup component add "${missing[@]}" || die "rustup component add ${missing[*]} failed"
  fi
  log "rust: $(cargo --version), $(cargo fmt --version 2>/dev/null), $(cargo clippy --version 2>/dev/null)"
}

# ------------------------------------------------------------------ Postgres
GSB_PG_HOST=${GSB_PG_HOST:-127.0.0.1}
GSB_PG_PORT=${GSB_PG_PORT:-5432}
GSB_PG_MODE=${GSB_PG_MODE:-auto}
GSB_PG_WAIT=${GSB_PG_WAIT:-60}

# newest binary of that name in PATH or in Debian's /usr/lib/postgresql/<ver>/bin
_pg_bin() { # name
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return 0; fi
  local f
  f=$(printf '%s\n' /usr/lib/postgresql/*/bin/"$1" | sort -V | tail -n 1)
  [ -n "$f" ] && [ -x "$f" ] && { printf '%s\n' "$f"; return 0; }
  return 1
}

_pg_ready() {
  local isready
  if isready=$(_pg_bin pg_isready); then
    "$isready" -q -h "$GSB_PG_HOST" -p "$GSB_PG_PORT" -t 2 >/dev/null 2>&1
  else # no client tools yet: is anything listening?
    (exec 3<>"/dev/tcp/$GSB_PG_HOST/$GSB_PG_PORT") >/dev/null 2>&1
  fi
}

_pg_wait() { # seconds -> 0 when ready
  local deadline=$(( $(date +%s) + $1 ))
  until _pg_ready; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# Debian clusters (pg_lsclusters) configured for $GSB_PG_PORT, as "<ver> <name>" lines
_pg_debian_clusters() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  pg_lsclusters -h 2>/dev/null | awk -v p="$GSB_PG_PORT" '$3 == p { print $1, $2 }' || true
}

_pg_start_debian() { # -> 0 if a cluster was started and answers
  command -v pg_ctlcluster >/dev/null 2>&1 || return 1
  local clusters ver name
  clusters=$(_pg_debian_clusters)
  [ -n "$clusters" ] || return 1
  while read -r ver name; do
    log "postgres: pg_ctlcluster --skip-systemctl-redirect $ver $name start"
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start \
      || log "postgres: pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
    if _pg_wait 20; then return 0; fi
  done <<<"$clusters"
  return 1
}

_pg_apt_install() {
  command -v apt-get >/dev/null 2>&1 || { log "postgres: no apt-get; cannot install postgresql"; return 1; }
  [ "$(id -u)" -eq 0 ] || { log "postgres: not root; cannot apt-get install postgresql"; return 1; }
  log "postgres: apt-get update && apt-get install -y postgresql"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
}

# Private cluster: initdb (trust auth, superuser postgres) into $GSB_STATE_DIR/postgres,
# listening on $GSB_PG_HOST:$GSB_PG_PORT, socket in the data dir.
_pg_start_initdb() {
  local initdb pgctl data="$GSB_STATE_DIR/postgres" logf="$GSB_STATE_DIR/postgres.log"
  local -a as_user=()
  initdb=$(_pg_bin initdb) || { log "postgres: initdb not found"; return 1; }
  pgctl=$(dirname "$initdb")/pg_ctl
  [ -x "$pgctl" ] || pgctl=$(_pg_bin pg_ctl) || { log "postgres: pg_ctl not found"; return 1; }
  mkdir -p "$GSB_STATE_DIR"
  if [ "$(id -u)" -eq 0 ]; then # initdb/postgres refuse to run as root
    if ! id postgres >/dev/null 2>&1; then
      log "postgres: creating system user postgres"
      useradd --system --no-create-home --shell /usr/sbin/nologin postgres || return 1
    fi
    as_user=(runuser -u postgres --)
    chmod o+x "$GSB_STATE_DIR" 2>/dev/null || true
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    log "postgres: initdb $data (trust auth, superuser postgres)"
    rm -rf "$data"
    mkdir -p "$data"
    [ "${#as_user[@]}" -eq 0 ] || chown postgres: "$data"
    chmod 700 "$data"
    "${as_user[@]}" "$initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale \
      >"$GSB_STATE_DIR/initdb.log" 2>&1 \
      || { log "postgres: initdb failed; see $GSB_STATE_DIR/initdb.log"; return 1; }
  fi
  [ "${#as_user[@]}" -eq 0 ] || { touch "$logf"; chown postgres: "$logf"; }
  log "postgres: pg_ctl start -D $data on $GSB_PG_HOST:$GSB_PG_PORT (log $logf)"
  "${as_user[@]}" "$pgctl" -D "$data" -l "$logf" -w -t "$GSB_PG_WAIT" \
    -o "-c listen_addresses=$GSB_PG_HOST -p $GSB_PG_PORT -c unix_socket_directories=$data" start \
    >/dev/null || { log "postgres: pg_ctl start failed; see $logf"; return 1; }
  _pg_wait "$GSB_PG_WAIT"
}

ensure_postgres() {
  if _pg_ready; then
    log "postgres: answering on $GSB_PG_HOST:$GSB_PG_PORT"
    return 0
  fi
  log "postgres: nothing on $GSB_PG_HOST:$GSB_PG_PORT (mode $GSB_PG_MODE); starting one"
  local started=0
  case "$GSB_PG_MODE" in
    auto)
      if _pg_start_debian; then
        started=1
      elif [ -z "$(_pg_debian_clusters)" ] && ! _pg_bin initdb >/dev/null; then
        # no Debian cluster and no server binaries: install them (creates cluster 15/main)
        if _pg_apt_install && _pg_start_debian; then started=1; fi
      fi
      if [ "$started" = 0 ] && ! _pg_ready; then
        if _pg_start_initdb; then started=1; fi
      fi
      ;;
    initdb)
      if _pg_start_initdb; then started=1; fi
      ;;
    *) die "GSB_PG_MODE=$GSB_PG_MODE: expected auto or initdb" ;;
  esac
  if ! _pg_wait "$GSB_PG_WAIT"; then
    die "postgres: nothing answers on $GSB_PG_HOST:$GSB_PG_PORT after ${GSB_PG_WAIT}s (tried: $GSB_PG_MODE); see /var/log/postgresql/ or $GSB_STATE_DIR/postgres.log"
  fi
  log "postgres: answering on $GSB_PG_HOST:$GSB_PG_PORT"
}

# ------------------------------------------------------- Keystone + Glance rig
ensure_openstack() {
  local dir="$GSB_ROOT/scripts/openstack" t0
  t0=$(date +%s)
  log "openstack: install.sh"
  "$dir/install.sh" || die "openstack: scripts/openstack/install.sh failed"
  log "openstack: start.sh"
  "$dir/start.sh" || die "openstack: scripts/openstack/start.sh failed (logs in \$OS_STATE/log)"
  # OS_VENV, OS_STATE, URLs, ports, passwords (same defaults the scripts used)
  # shellcheck source=scripts/openstack/common.sh
  . "$dir/common.sh"
  if [ "${GSB_OPENSTACK_SEED:-1}" = 0 ] && [ -f "$OS_STATE/seed.env" ]; then
    # A rig in use by a test run: seeding again would reset the images its tests share.
    log "openstack: seed.sh skipped (GSB_OPENSTACK_SEED=0; seeded already)"
  else
    log "openstack: seed.sh"
    "$dir/seed.sh" >/dev/null || die "openstack: scripts/openstack/seed.sh failed"
  fi
  { [ -f "$OS_STATE/env.sh" ] && [ -f "$OS_STATE/seed.env" ]; } \
    || die "openstack: $OS_STATE/env.sh or seed.env missing after start.sh/seed.sh"
  set -a
  # shellcheck disable=SC1091
  . "$OS_STATE/env.sh"
  # shellcheck disable=SC1091
  . "$OS_STATE/seed.env"
  set +a
  log "openstack: keystone $KEYSTONE_URL, glance $GLANCE_URL, image $IMAGE_ID, clouds $OS_CLIENT_CONFIG_FILE ($(( $(date +%s) - t0 ))s)"
}

# ------------------------------------------------------------ Nova + Cinder
# Real Nova 34 (fake virt driver) + Placement + Cinder 29 (file-backed volumes) next to
# the Keystone/Glance rig (scripts/openstack/compute, from ../shared/openstack-dev/compute).
# They need MariaDB and RabbitMQ on loopback (started here when installed but not answering,
# installed with apt-get when missing), the mysql client and qemu-img.
_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
_apt_get() { # packages...
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] \
    || die "$*: missing, and apt-get (as root) is not available to install them"
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}
_ensure_service() { # port, debian package, start command...
  local port=$1 pkg=$2 i
  shift 2
  _port_open "$port" && return 0
  dpkg -s "$pkg" >/dev/null 2>&1 || _apt_get "$pkg"
  log "compute: starting $pkg ($*)"
  "$@" >/dev/null 2>&1 || true
  for i in $(seq 1 60); do _port_open "$port" && return 0; sleep 1; done
  die "compute: $pkg does not answer on 127.0.0.1:$port"
}
ensure_compute() {
  local dir="$GSB_ROOT/scripts/openstack/compute" t0
  t0=$(date +%s)
  # shellcheck source=scripts/openstack/common.sh
  . "$GSB_ROOT/scripts/openstack/common.sh"
  command -v mysql >/dev/null 2>&1 || _apt_get mariadb-client
  command -v qemu-img >/dev/null 2>&1 || _apt_get qemu-utils
  _ensure_service 3306 mariadb-server service mariadb start
  _ensure_service 5672 rabbitmq-server service rabbitmq-server start
  local out="$GSB_STATE_DIR/compute-scripts.log"
  mkdir -p "$GSB_STATE_DIR"
  log "compute: install-cinder.sh (Nova, Placement, Cinder into the rig's venv; output in $out)"
  "$dir/install-cinder.sh" >"$out" 2>&1 || { tail -n 30 "$out" >&2; die "compute: install-cinder.sh failed"; }
  log "compute: start-nova.sh, start-cinder.sh"
  { nice -n 10 "$dir/start-nova.sh" && nice -n 10 "$dir/start-cinder.sh"; } >>"$out" 2>&1 \
    || { tail -n 30 "$out" >&2; die "compute: start-nova.sh/start-cinder.sh failed (logs in $OS_STATE/log)"; }
  set -a
  # shellcheck disable=SC1091
  . "$OS_STATE/nova-env.sh"
  # shellcheck disable=SC1091
  . "$OS_STATE/cinder-env.sh"
  set +a
  log "compute: nova $NOVA_URL, cinder $CINDER_URL ($(( $(date +%s) - t0 ))s)"
}

# ----------------------------------------------------------------- chromium
# Debian's Chromium and its WebDriver, for the console's real-browser tests
# (tests/api/console_browser.rs drives /usr/bin/chromedriver headless).
AXE_CORE_VERSION=${AXE_CORE_VERSION:-4.10.3}
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    _apt_get chromium chromium-driver fonts-dejavu-core
  fi
  export CHROMEDRIVER=/usr/bin/chromedriver CHROMIUM=/usr/bin/chromium
  log "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
  # axe-core (the npm package, pinned), injected into the console's pages by the browser test
  # to find accessibility violations; fetched once into the state directory.
  local axe="$GSB_STATE_DIR/axe-core-$AXE_CORE_VERSION"
  if [ ! -s "$axe/package/axe.min.js" ]; then
    command -v npm >/dev/null 2>&1 || _apt_get npm
    mkdir -p "$axe"
    log "axe-core: npm pack axe-core@$AXE_CORE_VERSION"
    (cd "$axe" && npm pack --silent "axe-core@$AXE_CORE_VERSION" >/dev/null && tar -xzf "axe-core-$AXE_CORE_VERSION.tgz") \
      || die "npm pack axe-core@$AXE_CORE_VERSION failed"
  fi
  export AXE_CORE_JS="$axe/package/axe.min.js"
}

# ------------------------------------------------------------- schemathesis
# The API fuzzer the test suite drives against the served OpenAPI document.
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
ensure_schemathesis() {
  local venv="$GSB_STATE_DIR/schemathesis-venv"
  if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for schemathesis)"
    log "schemathesis: installing $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed (apt-get install python3-venv?)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
      || die "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
  fi
  export SCHEMATHESIS="$venv/bin/schemathesis"
  log "schemathesis: $("$SCHEMATHESIS" --version)"
}

# ------------------------------------------------------------------ pytools
# The standards' reference libraries, which the tests (tests/py/*.py) use to check that what
# the broker emits is what the standards say: CADF events (pycadf), webhook signatures
# (standardwebhooks), the metrics text format (prometheus_client), the OpenAPI document
# (openapi-spec-validator), and YAML for the shipped alert rules (PyYAML).
GSB_PYTOOLS=${GSB_PYTOOLS:-"pycadf==4.1.0 standardwebhooks==1.1.0 prometheus_client==0.26.0 openapi-spec-validator==0.9.0 PyYAML==6.0.3"}
ensure_pytools() {
  local venv="$GSB_STATE_DIR/pytools-venv" stamp
  stamp="$venv/.pins"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$GSB_PYTOOLS" ]; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for the tests' standard checks)"
    log "pytools: installing $GSB_PYTOOLS into $venv"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed (apt-get install python3-venv?)"
    # shellcheck disable=SC2086 # the pins are words
    "$venv/bin/pip" install --quiet --disable-pip-version-check $GSB_PYTOOLS \
      || die "pip install $GSB_PYTOOLS failed"
    printf '%s' "$GSB_PYTOOLS" >"$stamp"
  fi
  "$venv/bin/python" -c 'import pycadf, standardwebhooks, prometheus_client, openapi_spec_validator, yaml' \
    || die "pytools: $venv lacks a library; remove it and run again"
  export GSB_PYTHON="$venv/bin/python"
  log "pytools: $GSB_PYTOOLS"
}

# ----------------------------------------------------------------- promtool
# Checks the shipped alert rules (docs/prometheus/alerts.yml). Taken from Debian's
# `prometheus` package with `apt-get download` and unpacked into $GSB_STATE_DIR: no daemon,
# no dependencies installed.
ensure_promtool() {
  local dir="$GSB_STATE_DIR/promtool" found
  if found=$(command -v promtool 2>/dev/null); then
    export PROMTOOL="$found"
  elif [ -x "$dir/usr/bin/promtool" ]; then
    export PROMTOOL="$dir/usr/bin/promtool"
  else
    command -v apt-get >/dev/null 2>&1 || die "promtool not found and no apt-get to fetch it: install Prometheus's promtool"
    log "promtool: apt-get download prometheus, unpacked into $dir"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" || die "cannot create $dir.tmp"
    (cd "$dir.tmp" && apt-get download -qq prometheus >/dev/null 2>&1) \
      || { [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get update -qq && (cd "$dir.tmp" && apt-get download -qq prometheus); } \
      || die "apt-get download prometheus failed: install Prometheus's promtool"
    dpkg-deb -x "$dir.tmp"/prometheus_*.deb "$dir.tmp/root" || die "unpacking the prometheus package failed"
    mkdir -p "$dir/usr/bin" && cp "$dir.tmp/root/usr/bin/promtool" "$dir/usr/bin/promtool" && rm -rf "$dir.tmp"
    export PROMTOOL="$dir/usr/bin/promtool"
  fi
  log "promtool: $("$PROMTOOL" --version 2>&1 | head -n 1)"
}

# --------------------------------------------------------------- cargo-deny
# Advisories, licences, banned crates and sources (deny.toml). cargo-deny is installed
# (pinned) into ~/.cargo/bin when missing, built outside the project's target directory.
CARGO_DENY_VERSION=${CARGO_DENY_VERSION:-0.20.2}
ensure_cargo_deny() {
  if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
    log "cargo-deny: installing $CARGO_DENY_VERSION (cargo install --locked, a few minutes once)"
    CARGO_TARGET_DIR="$GSB_STATE_DIR/cargo-deny-build" cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION" \
      || die "cargo install cargo-deny@$CARGO_DENY_VERSION failed"
  fi
  log "cargo-deny: $(cargo deny --version)"
}

# Licences, bans and sources need only Cargo.lock. Advisories need the RustSec database,
# which lives on GitHub: fetched fresh when GitHub answers; else the copy an earlier run
# fetched is used, with its age said; else the advisory check is skipped, loudly (a machine
# that cannot reach GitHub must not turn CI red, nor pass it silently).
check_dependencies() {
  cargo deny --locked check --hide-inclusion-graph bans licenses sources || return 1
  local dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs" fetch_log="$GSB_STATE_DIR/cargo-deny-fetch.log"
  mkdir -p "$GSB_STATE_DIR"
  if cargo deny --locked fetch db >"$fetch_log" 2>&1; then
    cargo deny --locked --offline check --hide-inclusion-graph advisories
  elif compgen -G "$dbs/advisory-db-*/crates" >/dev/null; then
    local copy
    copy=$(git -C "$(dirname "$(compgen -G "$dbs/advisory-db-*/crates" | head -n 1)")" log -1 --format=%cs 2>/dev/null || echo "an unknown date")
    log "WARNING: the RustSec advisory database could not be fetched ($(grep -v "^[[:space:]]*$" "$fetch_log" | tail -n 1)); checking against the copy of $copy"
    cargo deny --locked --offline check --hide-inclusion-graph advisories
  else
    log "WARNING: ADVISORIES NOT CHECKED: the RustSec advisory database could not be fetched and no copy is at hand ($(grep -v "^[[:space:]]*$" "$fetch_log" | tail -n 1)); licences, bans and sources were checked"
  fi
}
