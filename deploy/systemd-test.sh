#!/usr/bin/env bash
# Boot a real systemd (Debian bookworm, systemd 252 as PID 1 under systemd-nspawn), install this
# checkout's wheel and systemd/statsig-forwarder.service as the README says, and check what the unit
# promises: READY (Type=notify), the watchdog, restart after SIGKILL, a synchronous and truthful
# `systemctl reload` (applied: exit 0; refused: non-zero), error priority in the journal, a missing
# log directory, delivery to a local fake Statsig (tests/fake_statsig.py) and a clean stop.
#
# On demand, not part of .ci/run:   sudo deploy/systemd-test.sh      (deploy/README.md has a run's output)
# Needs root, debootstrap and systemd-nspawn (apt-get install debootstrap systemd-container) and
# Debian's mirror; the host's pip builds a wheelhouse (the machine reaches no index). The bookworm root file system is cached in $DEPLOY_CACHE (default
# ~/.cache/statsig-forwarder-deploy) and copied for each run; the machine itself runs with a private
# network (loopback only: nothing reaches the real Statsig).
# Prints one PASS/FAIL line per check, exits 1 if any failed. KEEP=1 leaves the machine's files.
# wait_for takes its condition in single quotes on purpose: it is evaluated on each try.
# shellcheck disable=SC2016
set -uo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"
BASE=$CACHE/rootfs-systemd
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sf-systemd.XXXXXX")
MACHINE=$WORK/machine
NSPAWN_PID=
LEADER=
SVC=statsig-forwarder

cleanup() {
  if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
    nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1 || kill -s RTMIN+4 "$LEADER" 2>/dev/null
  fi
  if [ -n "$NSPAWN_PID" ]; then
    for _ in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$NSPAWN_PID" 2>/dev/null
  fi
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, systemd-nspawn)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing: apt-get install systemd-container"

# -- the machine: bookworm with systemd and Python, the wheel and the shipped unit ---------------
cached_rootfs "$BASE" systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,procps
cp -a "$BASE" "$MACHINE"
wheelhouse "$WORK/dist"
cp "$ROOT/tests/fake_statsig.py" "$WORK/dist/"

install -d "$MACHINE/etc/statsig-forwarder"
install -m 0644 "$ROOT/systemd/forwarder.toml" "$MACHINE/etc/statsig-forwarder/forwarder.toml"
cp "$MACHINE/etc/statsig-forwarder/forwarder.toml" "$WORK/forwarder.toml.orig"
install -m 0600 /dev/null "$MACHINE/etc/statsig-forwarder/forwarder.env"
cat >"$MACHINE/etc/statsig-forwarder/forwarder.env" <<'EOF'
STATSIG_SERVER_SECRET_KEY=secret-systemd-test-0123456789
FORWARDER_STATSIG_API=http://127.0.0.1:8787/v1
EOF
install -m 0644 "$ROOT/systemd/statsig-forwarder.service" "$MACHINE/etc/systemd/system/"
# The one change to the shipped unit: a 4 s watchdog instead of 30 s, so its check takes seconds.
install -d "$MACHINE/etc/systemd/system/$SVC.service.d"
printf '[Service]\nWatchdogSec=4s\n' >"$MACHINE/etc/systemd/system/$SVC.service.d/test-watchdog.conf"
cat >"$MACHINE/etc/systemd/system/fake-statsig.service" <<'EOF'
[Unit]
Description=local fake Statsig (tests/fake_statsig.py)
[Service]
ExecStart=/opt/statsig-forwarder/bin/python /opt/fake/fake_statsig.py --port 8787 --quiet
[Install]
WantedBy=multi-user.target
EOF
install -m 0755 "$ROOT/deploy/gen-events" "$MACHINE/usr/local/bin/gen-events"
cat >"$MACHINE/usr/local/bin/fake-count" <<'EOF'
#!/usr/bin/python3
# events the fake Statsig accepted so far
import json, urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:8787/_fake/stats", timeout=5))["events"])
EOF
cat >"$MACHINE/usr/local/bin/readyz" <<'EOF'
#!/usr/bin/python3
# the forwarder's /readyz: status and body
import urllib.error, urllib.request
try:
    r = urllib.request.urlopen("http://127.0.0.1:9464/readyz", timeout=5)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print("unreachable", e)
EOF
chmod 0755 "$MACHINE"/usr/local/bin/{fake-count,readyz}

log "installing the wheel into /opt/statsig-forwarder (pip, from the wheelhouse)"
systemd-nspawn -q -D "$MACHINE" --register=no --keep-unit --private-network --bind-ro="$WORK/dist:/mnt/dist" \
  /bin/sh -ec '
    export PIP_NO_INDEX=1 PIP_FIND_LINKS=/mnt/dist PIP_DISABLE_PIP_VERSION_CHECK=1
    python3 -m venv /opt/statsig-forwarder
    /opt/statsig-forwarder/bin/pip install -q /mnt/dist/statsig_forwarder-*.whl
    mkdir -p /opt/fake  # the fake needs only what the forwarder depends on: it runs with its venv
    cp /mnt/dist/fake_statsig.py /opt/fake/
    systemctl enable -q fake-statsig.service' >"$WORK/install.log" 2>&1 || die "install failed: $(tail -20 "$WORK/install.log")"

# -- boot ---------------------------------------------------------------------------------------
log "booting systemd in $MACHINE"
systemd-nspawn -q -D "$MACHINE" -b -M sf-systemd-test --register=no --keep-unit --private-network \
  --console=passive >"$WORK/boot.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 100); do  # the machine's PID 1: nspawn's child running systemd
  LEADER=$(ps -o pid=,comm= --ppid "$NSPAWN_PID" | awk '$2 == "systemd" { print $1; exit }')
  [ -n "$LEADER" ] && break
  sleep 0.1
done
[ -n "$LEADER" ] || die "the container did not start: $(cat "$WORK/boot.log")"

# Run a command inside the machine (its namespaces, a clean environment).
m() { nsenter -t "$LEADER" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 bash -c "$1"; }
# wait_for SECONDS COMMAND: until COMMAND (in the machine) succeeds
wait_for() {
  local end=$((SECONDS + $1))
  while [ $SECONDS -lt "$end" ]; do m "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
prop() { m "systemctl show -P $1 $SVC"; }
# The service's own lines (what it and its ExecReload wrote), not systemd's messages about it.
journal_since() { m "journalctl --sync; journalctl -q _SYSTEMD_UNIT=$SVC.service -o cat --since @$1 ${2:-}"; }

wait_for 60 'systemctl is-system-running | grep -qE "^(running|degraded)$"' || fail "boot: $(m 'systemctl is-system-running')"
log "$(m 'systemctl --version | head -1'), PID 1 is $(m 'cat /proc/1/comm'), state $(m 'systemctl is-system-running')"
wait_for 30 fake-count || die "fake Statsig did not start: $(m 'journalctl -u fake-statsig -o cat | tail')"

# -- READY and delivery ---------------------------------------------------------------------------
m 'mkdir -p /var/log/app && gen-events /var/log/app/events.ndjson 0 1000'
t=$(date +%s.%N)
m "systemctl start $SVC"; rc=$?
took=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
status=$(prop StatusText)
if [ $rc = 0 ] && [ "$(prop ActiveState)/$(prop SubState)" = active/running ]; then
  pass "READY: systemctl start returned 0 after READY=1 (${took}s), active/running, STATUS=\"$status\""
else
  fail "READY: start rc=$rc, $(prop ActiveState)/$(prop SubState): $(journal_since "$t" | tail -5)"
fi
if wait_for 30 '[ "$(fake-count)" -ge 1000 ]'; then
  pass "delivery: 1000 events at the fake Statsig"
else
  fail "delivery: fake Statsig has $(m fake-count) of 1000"
fi
log "readyz: $(m readyz)"
out=$(m "/opt/statsig-forwarder/bin/statsig-forwarder status --state-dir /var/lib/statsig-forwarder 2>&1"); rc=$?
if [ $rc = 0 ] && echo "$out" | grep -q /var/log/app/events.ndjson; then
  pass "status (as root, --state-dir /var/lib/statsig-forwarder): exit 0, shows the file; first lines:"
  echo "$out" | head -14 | sed 's/^/           /'
else
  fail "status: exit $rc: $(echo "$out" | head -5)"
fi
log "systemd-analyze security: $(m "systemd-analyze security $SVC 2>/dev/null | tail -1")"

# -- watchdog ---------------------------------------------------------------------------------------
pid=$(prop MainPID)
sleep 10  # 2.5 watchdog periods: the pings keep it alive
if [ "$(prop NRestarts)" = 0 ] && [ "$(prop MainPID)" = "$pid" ]; then
  pass "watchdog: WatchdogUSec=$(prop WatchdogUSec), pinged: same process after 10 s, NRestarts=0"
else
  fail "watchdog: restarted while healthy (NRestarts=$(prop NRestarts))"
fi
t=$(date +%s.%N)
m "kill -STOP $pid"
if wait_for 30 "[ \"\$(systemctl show -P NRestarts $SVC)\" = 1 ] && systemctl is-active -q $SVC && [ \"\$(systemctl show -P MainPID $SVC)\" != $pid ]"; then
  pass "watchdog: a frozen process (SIGSTOP) was killed and restarted: $(m "journalctl -q -u $SVC --since @$t -o cat | grep -m1 -i watchdog")"
else
  fail "watchdog: frozen process not restarted (NRestarts=$(prop NRestarts), $(prop ActiveState))"
fi

# -- restart after SIGKILL --------------------------------------------------------------------------
pid=$(prop MainPID)
m "systemctl kill -s SIGKILL --kill-who=main $SVC"
if wait_for 30 "[ \"\$(systemctl show -P NRestarts $SVC)\" = 2 ] && systemctl is-active -q $SVC && [ \"\$(systemctl show -P MainPID $SVC)\" != $pid ]"; then
  pass "SIGKILL: restarted (Restart=on-failure), NRestarts=2, MainPID $pid -> $(prop MainPID)"
else
  fail "SIGKILL: not restarted (NRestarts=$(prop NRestarts), $(prop ActiveState))"
fi
m 'gen-events /var/log/app/events.ndjson 1000 500'
if wait_for 30 '[ "$(fake-count)" -ge 1500 ]'; then
  pass "delivery after the restarts: $(m fake-count) events accepted (1500 written; at-least-once)"
else
  fail "delivery after the restarts: fake Statsig has $(m fake-count) of 1500"
fi

# -- reload: applied, then refused ------------------------------------------------------------------
pid=$(prop MainPID)
m 'echo "batch_size = 250" >> /etc/statsig-forwarder/forwarder.toml'
t=$(date +%s.%N)
out=$(m "systemctl reload $SVC 2>&1"); rc=$?
applied=$(journal_since "$t" | grep -c 'configuration reloaded')
if [ $rc = 0 ] && [ "$applied" -ge 1 ] && [ "$(prop MainPID)" = "$pid" ]; then
  pass "reload applied: systemctl reload exit 0, 'configuration reloaded' already logged when it returned"
else
  fail "reload applied: exit $rc, 'configuration reloaded' logged when it returned: $applied ${out:+($out)}"
fi
cp "$WORK/forwarder.toml.orig" "$MACHINE/etc/statsig-forwarder/forwarder.toml"
m 'echo "batch_size = \"lots\"" >> /etc/statsig-forwarder/forwarder.toml'  # valid TOML, invalid value
t=$(date +%s.%N)
out=$(m "systemctl reload $SVC 2>&1"); rc=$?
if [ $rc != 0 ] && m "systemctl is-active -q $SVC" && [ "$(prop MainPID)" = "$pid" ]; then
  pass "reload refused: systemctl reload exit $rc, still running the previous configuration: $(echo "$out" | head -3 | tr '\n' ' ')"
else
  fail "reload refused: systemctl reload exit $rc (want non-zero), active=$(prop ActiveState), MainPID $pid -> $(prop MainPID)"
fi
log "  after the refused reload: STATUS=\"$(prop StatusText)\""

# -- journal priorities -----------------------------------------------------------------------------
errs=$(journal_since "$t" "-p err")
infos=$(journal_since 0 "-p err" | grep -c -e 'configuration reloaded' -e 'forwarding to Statsig')
if [ -n "$errs" ] && [ "$infos" = 0 ]; then
  pass "journal: journalctl -p err shows the refused reload and no info line: $(echo "$errs" | head -1 | cut -c1-260)"
else
  fail "journal: journalctl -p err shows ${errs:-nothing} (info lines among them: $infos); priorities of its lines: $(m "journalctl -q _SYSTEMD_UNIT=$SVC.service -o json | python3 -c 'import sys,json,collections; print(dict(collections.Counter(json.loads(l)[\"PRIORITY\"] for l in sys.stdin)))'")"
fi
cp "$WORK/forwarder.toml.orig" "$MACHINE/etc/statsig-forwarder/forwarder.toml"
m "systemctl reload $SVC" || fail "reload back to the original configuration failed"

# -- missing log directory --------------------------------------------------------------------------
m "systemctl stop $SVC; rm -rf /var/log/app; systemctl reset-failed $SVC 2>/dev/null"
before=$(m fake-count)
t=$(date +%s.%N)
m "systemctl start $SVC" >/dev/null 2>&1; rc=$?
sleep 3
if [ $rc = 0 ] && m "systemctl is-active -q $SVC" && [ "$(prop NRestarts)" = 0 ]; then
  pass "missing /var/log/app: started (exit 0) and stays up; it logs: $(journal_since "$t" | grep -v -e 'forwarding to' | grep -m1 -i -e wait -e missing -e 'does not exist' | cut -c1-200)"
  log "  readyz with nothing to follow: $(m readyz)"
else
  fail "missing /var/log/app: start exit $rc, $(prop ActiveState) $(prop Result), restarts $(prop NRestarts): $(m "journalctl -q -u $SVC --since @$t -o cat | grep -m1 -e NAMESPACE -e 'Failed'")"
fi
m 'mkdir -p /var/log/app && gen-events /var/log/app/events.ndjson 5000 300'
if ! m "systemctl is-active -q $SVC"; then m "systemctl reset-failed $SVC; systemctl start $SVC"; fi
if wait_for 30 "[ \"\$(fake-count)\" -ge $((before + 300)) ]"; then
  pass "missing /var/log/app: once created, its new file was delivered ($(m fake-count) events in all)"
else
  fail "missing /var/log/app: after creating it, fake Statsig has $(m fake-count), want >= $((before + 300))"
fi

# -- stop -------------------------------------------------------------------------------------------
t=$(date +%s.%N)
m "systemctl stop $SVC"; rc=$?
if [ $rc = 0 ] && [ "$(prop Result)" = success ] && [ "$(prop ExecMainStatus)" = 0 ]; then
  pass "stop: SIGTERM, exit status 0, Result=success: $(journal_since "$t" | grep -m1 '"stopped"' | cut -c1-160)"
else
  fail "stop: rc=$rc Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus)"
fi

summary
