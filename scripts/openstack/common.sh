# shellcheck shell=bash
# Shared settings for install.sh / start.sh / seed.sh / stop.sh.
# Source this file; every value can be overridden from the environment.

# Everything lives under the project's state dir (GSB_STATE_DIR, default
# ${TMPDIR:-/tmp}/glance-share-broker); OS_VENV / OS_STATE override each path.
GSB_STATE_DIR=${GSB_STATE_DIR:-${TMPDIR:-/tmp}/glance-share-broker}
OS_VENV=${OS_VENV:-$GSB_STATE_DIR/openstack/venv}
OS_STATE=${OS_STATE:-$GSB_STATE_DIR/openstack/state}

# Loopback only. The scripts refuse anything that is not 127.x / localhost.
OS_HOST=${OS_HOST:-127.0.0.1}
KEYSTONE_PORT=${KEYSTONE_PORT:-35357}
GLANCE_PORT=${GLANCE_PORT:-39292}

OS_REGION=${OS_REGION:-RegionOne}
OS_ADMIN_PASSWORD=${OS_ADMIN_PASSWORD:-admin-secret}
GLANCE_SERVICE_PASSWORD=${GLANCE_SERVICE_PASSWORD:-glance-secret}
# Glance's own default is 128; lower it (e.g. 5) to exercise the quota.
# Changing it needs stop.sh + start.sh (the DB survives).
GLANCE_IMAGE_MEMBER_QUOTA=${GLANCE_IMAGE_MEMBER_QUOTA:-128}
# uWSGI worker processes for Glance; Keystone runs 1 process x KEYSTONE_THREADS.
OS_WORKERS=${OS_WORKERS:-2}
KEYSTONE_THREADS=${KEYSTONE_THREADS:-4}
# bcrypt rounds for Keystone password hashes (Keystone default: 12).
KEYSTONE_PASSWORD_HASH_ROUNDS=${KEYSTONE_PASSWORD_HASH_ROUNDS:-4}
# How long start.sh waits for each service to answer (seconds). A first start
# on a loaded 2-core machine has taken minutes, so the default is generous.
OS_START_WAIT=${OS_START_WAIT:-600}

KEYSTONE_URL="http://${OS_HOST}:${KEYSTONE_PORT}"
GLANCE_URL="http://${OS_HOST}:${GLANCE_PORT}"

export GSB_STATE_DIR OS_VENV OS_STATE OS_HOST KEYSTONE_PORT GLANCE_PORT OS_REGION OS_ADMIN_PASSWORD \
  GLANCE_SERVICE_PASSWORD GLANCE_IMAGE_MEMBER_QUOTA OS_WORKERS KEYSTONE_URL GLANCE_URL \
  KEYSTONE_THREADS KEYSTONE_PASSWORD_HASH_ROUNDS

case "$OS_HOST" in
  127.*|localhost) ;;
  *) echo "OS_HOST=$OS_HOST is not a loopback address; refusing" >&2; exit 2 ;;
esac

os_pid_alive() { # $1 = pid file
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

os_http_code() { # $1 = url, rest = extra curl args
  local url=$1; shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" 2>/dev/null || true
}
