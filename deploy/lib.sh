# shellcheck shell=bash
# Shared by deploy/systemd-test.sh and deploy/podman-test.sh (sourced): PASS/FAIL lines, a cached
# debootstrap root file system, and a wheelhouse of this checkout built by the host's pip.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this
CACHE=${DEPLOY_CACHE:-$HOME/.cache/statsig-forwarder-deploy}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FAILED=0

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
pass() { log "PASS  $*"; }
fail() { log "FAIL  $*"; FAILED=$((FAILED + 1)); }
die() { log "ERROR $*"; exit 2; }

# The last line, and the exit status: 0 when every check passed.
summary() {
  log "$([ "$FAILED" = 0 ] && echo "all checks passed" || echo "$FAILED check(s) failed")"
  [ "$FAILED" = 0 ]
}

# cached_rootfs DIR PACKAGES: `debootstrap --variant=minbase bookworm` with PACKAGES into DIR, once.
cached_rootfs() {
  [ -d "$1" ] && return 0
  log "debootstrap bookworm into $1 (once; a few minutes)"
  mkdir -p "$(dirname "$1")"
  debootstrap --variant=minbase --include="$2" bookworm "$1.tmp" "$MIRROR" >"$1.log" 2>&1 \
    || die "debootstrap failed: $1.log"
  mv "$1.tmp" "$1"
}

# wheelhouse DIR [REQUIREMENT...]: this checkout's wheel, its dependencies and REQUIREMENTs, from the
# host's pip (the machines and builds below reach no package index).
wheelhouse() {
  local dir=$1
  shift
  log "building the wheelhouse (this checkout's wheel and its dependencies)"
  mkdir -p "$dir"
  python3 -m pip wheel -q -w "$dir" "$ROOT" "$@" >"$dir.log" 2>&1 || die "wheelhouse failed: $(tail "$dir.log")"
}
