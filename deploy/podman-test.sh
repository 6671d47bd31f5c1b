#!/usr/bin/env bash
# Build the Dockerfile, unchanged, with a real container engine (Debian's podman) and run the image:
# user and group, no pip, the announced dry run, delivery to a local fake Statsig
# (tests/fake_statsig.py), the HEALTHCHECK, SIGTERM (exit 0, time taken) and a restart on the same
# state volume (resumes at its checkpoint: nothing sent twice).
#
# On demand, not part of .ci/run:   sudo deploy/podman-test.sh      (deploy/README.md has a run's output)
# Needs root, podman, runc, slirp4netns and debootstrap (apt-get install podman runc slirp4netns
# debootstrap). No image registry is reachable here, so the Dockerfile's base image is a stand-in
# made locally and tagged with its FROM name: a debootstrap bookworm root file system with Debian's
# Python 3.11 at the official image's paths (/usr/local/bin/python, python3; pip and setuptools
# in /usr/local, no EXTERNALLY-MANAGED), cached in $DEPLOY_CACHE (default
# ~/.cache/statsig-forwarder-deploy). Nor is PyPI reachable from inside a build: the host's pip
# builds a wheelhouse, mounted at /wheels during `podman build` (the stand-in's /etc/pip.conf
# points there, as an internal mirror would). For a VM without systemd, podman runs with its own
# containers.conf: runc, cgroupfs, file events, ulimits at the host's hard limits; `--format docker`
# keeps HEALTHCHECK (OCI images have no such field).
# Prints one PASS/FAIL line per check, exits 1 if any failed. KEEP=1 leaves the work directory.
# wait_for takes its condition in single quotes on purpose: it is evaluated on each try.
# shellcheck disable=SC2016
set -uo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"
BASE=$CACHE/rootfs-python
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sf-podman.XXXXXX")
IMAGE=localhost/statsig-forwarder:podman-test
NAME=sf-podman-test-$$
VOLUME=sf-podman-test-state-$$
FAKE_PID=

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, podman import)"
for tool in podman runc slirp4netns debootstrap; do
  command -v "$tool" >/dev/null || die "$tool missing: apt-get install podman runc slirp4netns debootstrap"
done

cat >"$WORK/containers.conf" <<EOF
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
# podman (root) asks for nofile and nproc 1048576 by default, above this VM's hard limits, and runc
# then fails ("error setting rlimit"); podman 4.3 ignores default_ulimits there, so flags it is.
# Measured here: nproc above kernel.pid_max (32768) fails too, though the hard limit is 96365.
nproc=$(ulimit -Hu); pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
ULIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
p() { podman "$@"; }
# One-off commands: no healthcheck (without systemd podman cannot schedule it and says so).
prun() { podman run "${ULIMITS[@]}" --no-healthcheck "$@"; }

cleanup() {
  p rm -f -t 0 "$NAME" "$NAME-2" >/dev/null 2>&1
  p volume rm -f "$VOLUME" >/dev/null 2>&1
  [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# -- the stand-in base image, tagged with the Dockerfile's FROM name ------------------------------
FROM_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$ROOT/Dockerfile")
[ -n "$FROM_IMAGE" ] || die "no ARG PYTHON_IMAGE in the Dockerfile"
cached_rootfs "$BASE" python3,python3-venv,ca-certificates
log "making the stand-in for $FROM_IMAGE"
cp -a "$BASE" "$WORK/base"
rm -f "$WORK/base/usr/lib/python3.11/EXTERNALLY-MANAGED"
ln -sf /usr/bin/python3.11 "$WORK/base/usr/local/bin/python3"
ln -sf python3 "$WORK/base/usr/local/bin/python"
# pip and setuptools in /usr/local with their RECORD files (as in the official image, where
# `pip uninstall` can remove them), from the wheels Debian ships for venvs
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$WORK/base" /usr/bin/python3 -c 'import glob, runpy, sys
pip = glob.glob("/usr/share/python-wheels/pip-*.whl")[0]
sys.path.insert(0, pip)
sys.argv = ["pip", "install", "-q", "--root-user-action=ignore", "--no-index", "--find-links", "/usr/share/python-wheels", "--no-warn-script-location",
            "pip", "setuptools"]
runpy.run_module("pip", run_name="__main__")' || die "installing pip into the stand-in failed"
cat >"$WORK/base/etc/pip.conf" <<'EOF'
# stand-in base image only: no index is reachable; podman-test.sh mounts a wheelhouse at /wheels
[global]
no-index = true
find-links = /wheels
EOF
rm -rf "$WORK/base/var/cache/apt/archives/"*.deb "$WORK/base/var/lib/apt/lists/"*
case $FROM_IMAGE in */*) FROM_FULL=$FROM_IMAGE ;; *) FROM_FULL=docker.io/library/$FROM_IMAGE ;; esac
tar -C "$WORK/base" -c . | p import -q --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$FROM_FULL" >/dev/null \
  || die "podman import failed"
rm -rf "$WORK/base"
log "stand-in: $(prun --rm --network none "$FROM_IMAGE" sh -c 'command -v python; python --version; python -m pip --version' | tr '\n' ' ')"

# -- wheelhouse, fake Statsig -------------------------------------------------------------------------
wheelhouse "$WORK/wheels" "setuptools>=68" wheel  # setuptools: the image build's build backend
# The fake needs only what the forwarder depends on: it runs in a venv with the forwarder installed.
if ! { python3 -m venv "$WORK/fake" \
       && "$WORK/fake/bin/pip" install -q --no-index --find-links "$WORK/wheels" "$WORK"/wheels/statsig_forwarder-*.whl; }; then
  die "fake Statsig venv failed"
fi
rm -f "$WORK/wheels"/statsig_forwarder-*.whl  # the image build installs the source, as it would
FAKE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$WORK/fake/bin/python" "$ROOT/tests/fake_statsig.py" --port "$FAKE_PORT" --quiet >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
fake_count() { python3 -c "import json, urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:$FAKE_PORT/_fake/stats', timeout=5))['events'])"; }
wait_for() {
  local end=$((SECONDS + $1))
  while [ $SECONDS -lt "$end" ]; do eval "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
wait_for 10 fake_count || die "fake Statsig did not start: $(cat "$WORK/fake.log")"
# from inside a container (slirp4netns), the host's loopback is 10.0.2.2
STATSIG_API=http://10.0.2.2:$FAKE_PORT/v1
NET=slirp4netns:allow_host_loopback=true

gen_events() { python3 "$ROOT/deploy/gen-events" "$@"; }  # FILE FIRST COUNT

# -- build ------------------------------------------------------------------------------------------
log "podman build --format docker (Dockerfile unchanged)"
t=$SECONDS
if p build -q --format docker "${ULIMITS[@]}" --pull=never --network none --volume "$WORK/wheels:/wheels:ro" -t "$IMAGE" "$ROOT" \
  >"$WORK/build.log" 2>&1; then
  pass "build: $((SECONDS - t)) s, image $(p image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
else
  fail "build: $(tail -20 "$WORK/build.log")"
  exit 1
fi
log "$(p --version), runtime $(p info --format '{{.Host.OCIRuntime.Name}}'), cgroups $(p info --format '{{.Host.CgroupManager}}')"

# -- user and group, no pip -------------------------------------------------------------------------
ids=$(prun --rm --network none --entrypoint id "$IMAGE")
group=$(prun --rm --network none --entrypoint getent "$IMAGE" group "$(prun --rm --network none --entrypoint id "$IMAGE" -g)")
if [ "$ids" = "uid=10001(forwarder) gid=10001(forwarder) groups=10001(forwarder)" ] && [ -n "$group" ]; then
  pass "user and group: $ids; group entry $group"
else
  fail "user and group: id says '$ids', group entry '${group:-none}'"
fi
if ! prun --rm --network none --entrypoint python "$IMAGE" -m pip --version >/dev/null 2>&1 \
  && ! prun --rm --network none --entrypoint sh "$IMAGE" -c 'ls /opt/statsig-forwarder/bin | grep -q pip'; then
  pass "no pip: neither in the system Python nor in the venv"
else
  fail "pip is still in the image"
fi

# -- dry run ----------------------------------------------------------------------------------------
mkdir -p "$WORK/dry"
gen_events "$WORK/dry/events.ndjson" 0 3
prun --rm --network none -v "$WORK/dry:/var/log/app:ro" "$IMAGE" run --once /var/log/app/events.ndjson \
  >"$WORK/dry.out" 2>"$WORK/dry.err"; rc=$?
if [ $rc = 0 ] && grep -q "DRY RUN" "$WORK/dry.err" && [ "$(grep -c deploy_test "$WORK/dry.out")" = 3 ]; then
  pass "dry run without a key: announced ($(grep -o 'DRY RUN ([^)]*)' "$WORK/dry.err" | head -1)), 3 events on stdout, exit 0"
else
  fail "dry run: exit $rc, stderr: $(head -c 600 "$WORK/dry.err")"
fi

# -- delivery, healthcheck ------------------------------------------------------------------------------
mkdir -p "$WORK/logs"
chmod 0755 "$WORK/logs"
gen_events "$WORK/logs/events.ndjson" 0 1000
chmod 0644 "$WORK/logs/events.ndjson"
p volume create "$VOLUME" >/dev/null
run_forwarder() {  # NAME: detached, key set, logs read-only, state on the volume
  # Its HEALTHCHECK is kept; without systemd podman cannot schedule it (it logs that, into
  # $WORK/podman.err), so the check below runs it with `podman healthcheck run`.
  podman run "${ULIMITS[@]}" -d --name "$1" --network "$NET" -e STATSIG_SERVER_SECRET_KEY=secret-podman-test-0123456789 \
    -e FORWARDER_STATSIG_API="$STATSIG_API" -v "$WORK/logs:/var/log/app:ro" \
    -v "$VOLUME:/var/lib/statsig-forwarder" "$IMAGE" >/dev/null 2>>"$WORK/podman.err"
}
run_forwarder "$NAME" || fail "podman run failed"
if wait_for 60 '[ "$(fake_count)" -ge 1000 ]'; then
  pass "delivery: 1000 events at the fake Statsig"
else
  fail "delivery: fake Statsig has $(fake_count) of 1000: $(p logs "$NAME" 2>&1 | tail -5)"
fi
out=$(p exec "$NAME" statsig-forwarder status 2>&1); rc=$?
if [ $rc = 0 ] && echo "$out" | grep -q /var/log/app/events.ndjson; then
  pass "status: podman exec $NAME statsig-forwarder status: exit 0, shows the file; first lines:"
  echo "$out" | head -14 | sed 's/^/           /'
else
  fail "status: exit $rc: $(echo "$out" | head -5)"
fi
log "image healthcheck: $(p image inspect --format '{{json .HealthCheck}}' "$IMAGE")"
if wait_for 30 "p healthcheck run $NAME" && [ "$(p inspect --format '{{.State.Health.Status}}' "$NAME")" = healthy ]; then
  pass "HEALTHCHECK: podman healthcheck run -> $(p inspect --format '{{.State.Health.Status}}' "$NAME")"
else
  fail "HEALTHCHECK: $(p healthcheck run "$NAME" 2>&1) $(p inspect --format '{{json .State.Health}}' "$NAME")"
fi

# -- SIGTERM --------------------------------------------------------------------------------------------
t=$(date +%s.%N)
p stop -t 30 "$NAME" >/dev/null 2>>"$WORK/podman.err"
took=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
code=$(p inspect --format '{{.State.ExitCode}}' "$NAME")
stopped=$(p logs "$NAME" 2>&1 | grep -m1 '"stopped"' | cut -c1-200)
if [ "$code" = 0 ] && [ -n "$stopped" ]; then
  pass "SIGTERM: podman stop took ${took}s, exit code 0: $stopped"
else
  fail "SIGTERM: exit code $code after ${took}s: $(p logs "$NAME" 2>&1 | tail -3)"
fi
checkpoint=$(prun --rm --network none -v "$VOLUME:/var/lib/statsig-forwarder" --entrypoint cat "$IMAGE" \
  /var/lib/statsig-forwarder/checkpoints.json)
size=$(stat -c %s "$WORK/logs/events.ndjson")
if echo "$checkpoint" | grep -q "\"offset\": *$size\b"; then
  pass "checkpoint on the state volume at the file's end ($size bytes)"
else
  fail "checkpoint: want offset $size in $checkpoint"
fi

# -- restart on the same state volume -----------------------------------------------------------------
before=$(fake_count)
gen_events "$WORK/logs/events.ndjson" 1000 200
run_forwarder "$NAME-2" || fail "second podman run failed"
if wait_for 60 '[ "$(fake_count)" -ge $((before + 200)) ]'; then
  sleep 2  # anything re-sent would arrive now
  n=$(fake_count)
  if [ "$n" = $((before + 200)) ]; then
    pass "restart on the same volume: resumed at the checkpoint, only the 200 new events sent ($n in all)"
  else
    fail "restart on the same volume: $((n - before)) events sent, want 200 (re-sent what was delivered)"
  fi
else
  fail "restart on the same volume: fake Statsig has $(fake_count), want $((before + 200)): $(p logs "$NAME-2" 2>&1 | tail -5)"
fi
p stop -t 30 "$NAME-2" >/dev/null 2>>"$WORK/podman.err"
[ "$(p inspect --format '{{.State.ExitCode}}' "$NAME-2")" = 0 ] || fail "second container: exit code $(p inspect --format '{{.State.ExitCode}}' "$NAME-2")"

summary
