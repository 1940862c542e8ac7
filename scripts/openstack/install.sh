#!/usr/bin/env bash
# Create (or reuse) a Python venv with Keystone, Glance, keystonemiddleware,
# python-openstackclient and uWSGI, pinned to versions known to work together.
#
#   OS_VENV   venv path (default ${GSB_STATE_DIR:-${TMPDIR:-/tmp}/glance-share-broker}/openstack/venv)
#   PYTHON    interpreter used to create the venv (default: python3; >= 3.10)
#
# Idempotent: if the venv already has the pinned set, it does nothing.
# Needs python3 with venv/ensurepip, a C compiler and the Python headers
# (uWSGI is built from its sdist), and curl (start.sh health checks). Whatever
# is missing is installed with apt-get (Debian, as root; apt-get update once).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"

PYTHON=${PYTHON:-python3}
TOP_LEVEL=(
  glance==33.0.0
  keystone==30.0.0
  keystonemiddleware==13.0.1
  python-openstackclient==10.5.0
  uwsgi==2.0.31
)
STAMP="$OS_VENV/.openstack-dev.stamp"
WANT=$(cat "$HERE/constraints.txt" <(printf '%s\n' "${TOP_LEVEL[@]}") | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
   && "$OS_VENV/bin/python" -c 'import glance, keystone, keystonemiddleware, openstackclient' 2>/dev/null \
   && [ -x "$OS_VENV/bin/uwsgi" ] && [ -x "$OS_VENV/bin/openstack" ]; then
  echo "install.sh: $OS_VENV already complete"
  exit 0
fi

# ------------------------------------------------------ system prerequisites
APT_UPDATED=0
apt_install() { # packages...
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: missing prerequisites ($*) and no apt-get; install them by hand" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: missing prerequisites ($*); need root for apt-get (or install them by hand)" >&2
    exit 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    echo "install.sh: apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  echo "install.sh: apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

NEED=()
command -v "$PYTHON" >/dev/null 2>&1 || NEED+=(python3)
command -v gcc >/dev/null 2>&1 || NEED+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || NEED+=(curl ca-certificates)
[ "${#NEED[@]}" -eq 0 ] || apt_install "${NEED[@]}"

py_has_venv()    { "$1" -c 'import venv, ensurepip' >/dev/null 2>&1; }
py_has_headers() { "$1" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; }
NEED=()
py_has_venv "$PYTHON" || NEED+=(python3-venv)     # Debian splits venv/ensurepip out
py_has_headers "$PYTHON" || NEED+=(python3-dev)   # Python.h, to build uWSGI
[ "${#NEED[@]}" -eq 0 ] || apt_install "${NEED[@]}"
if ! { py_has_venv "$PYTHON" && py_has_headers "$PYTHON"; }; then
  # e.g. a pyenv/custom interpreter: the Debian packages only fix /usr/bin/python3
  if [ -x /usr/bin/python3 ] && py_has_venv /usr/bin/python3 && py_has_headers /usr/bin/python3; then
    echo "install.sh: $PYTHON lacks venv or Python.h; using /usr/bin/python3" >&2
    PYTHON=/usr/bin/python3
  else
    echo "install.sh: $PYTHON lacks venv/ensurepip or Python.h (tried apt-get python3-venv python3-dev)" >&2
    exit 1
  fi
fi

if [ ! -x "$OS_VENV/bin/python" ]; then
  "$PYTHON" -m venv "$OS_VENV"
fi
start=$(date +%s)
"$OS_VENV/bin/pip" install -q -c "$HERE/constraints.txt" "${TOP_LEVEL[@]}"
"$OS_VENV/bin/python" -c 'import glance, keystone, keystonemiddleware, openstackclient'
echo "$WANT" > "$STAMP"
echo "install.sh: installed into $OS_VENV in $(( $(date +%s) - start ))s"
