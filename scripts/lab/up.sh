#!/usr/bin/env bash
# Start virtlogd and libvirtd for the local lab, without systemd, idempotently.
#
# If `virsh -c qemu:///system version` already answers, nothing is started. Otherwise each
# daemon runs in the foreground under `tini -s` (a child subreaper): QEMU is daemonised by
# libvirtd and would otherwise be reaped by this sandbox's PID 1, which only reaps about every
# 2 s and makes `virsh save`/`destroy` wait for it (see /work/shared/LAB.md).
# Set VMPLACE_LAB_SUBREAPER=0 to start the daemons without tini (for measuring).
#
# What this script starts is recorded in $VMPLACE_LAB_STATE_DIR (default /run/vmplace-lab) as
# NAME.pid / NAME.start (pid and kernel start time); down.sh stops only those.
#
# Leases: every up.sh leaves a lease for its caller (the parent process, or
# $VMPLACE_LAB_OWNER_PID) in $STATE_DIR/leases/. down.sh drops its caller's lease and stops the
# daemons only when no lease of a still-running process remains, so parallel test runs on one
# machine do not pull libvirt from under each other. down.sh --force ignores leases.
# Safe with no TTY and no stdin (CI): daemons get /dev/null as stdin and log to files.
set -euo pipefail

URI=qemu:///system
STATE_DIR=${VMPLACE_LAB_STATE_DIR:-/run/vmplace-lab}
LOG_DIR=${VMPLACE_LAB_LOG_DIR:-/var/log/vmplace-lab}
TIMEOUT_S=${VMPLACE_LAB_UP_TIMEOUT:-30}
SUBREAPER=${VMPLACE_LAB_SUBREAPER:-1}
# shellcheck source=scripts/lab/detach.sh
. "$(dirname "$0")/detach.sh"

log() { printf 'lab/up: %s\n' "$*" >&2; }
die() { printf 'lab/up: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
t0=$(now_ms)

virsh_ok() { timeout 5 virsh -c "$URI" version >/dev/null 2>&1 </dev/null; }
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

take_lease() {
  local owner=${VMPLACE_LAB_OWNER_PID:-$PPID}
  mkdir -p "$STATE_DIR/leases" 2>/dev/null && proc_start "$owner" >"$STATE_DIR/leases/$owner" 2>/dev/null || true
}

if virsh_ok; then
  take_lease
  log "libvirt already answers on $URI; nothing started ($(( $(now_ms) - t0 )) ms)"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (the lab uses $URI)"
for b in libvirtd virtlogd virsh; do
  command -v "$b" >/dev/null || die "$b not found: run scripts/lab/install.sh first"
done
if [ "$SUBREAPER" = 1 ]; then command -v tini >/dev/null || die "tini not found: run scripts/lab/install.sh first"; fi

mkdir -p "$STATE_DIR" "$LOG_DIR" /var/run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu

# one up.sh at a time (parallel test workers); the winner starts, the others find it running
exec 9>"$STATE_DIR/lock"
flock -w "$TIMEOUT_S" 9 || die "another up.sh holds $STATE_DIR/lock"
if virsh_ok; then
  take_lease
  log "libvirt came up meanwhile on $URI; nothing started ($(( $(now_ms) - t0 )) ms)"
  exit 0
fi

# alive NAME: the process recorded under NAME is still the one we started
alive() {
  local pidf="$STATE_DIR/$1.pid" startf="$STATE_DIR/$1.start" pid
  [ -f "$pidf" ] && [ -f "$startf" ] || return 1
  pid=$(cat "$pidf")
  [ -n "$pid" ] && [ "$(proc_start "$pid")" = "$(cat "$startf")" ]
}

# start NAME CMD...: run CMD detached (own session, no stdin), record its pid and start time
start() {
  local name=$1; shift
  if alive "$name"; then log "$name already started by the lab (pid $(cat "$STATE_DIR/$name.pid"))"; return; fi
  local cmd=("$@")
  [ "$SUBREAPER" = 1 ] && cmd=(tini -s -- "$@")
  detach "${cmd[@]}" </dev/null >>"$LOG_DIR/$name.log" 2>&1
  local pid=$!
  local start=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do start=$(proc_start "$pid"); [ -n "$start" ] && break; sleep 0.05; done
  echo "$pid" >"$STATE_DIR/$name.pid"
  echo "$start" >"$STATE_DIR/$name.start"
  log "started $name: ${cmd[*]} (pid $pid, log $LOG_DIR/$name.log)"
}

# running_here NAME: a process NAME runs in this mount namespace (the two-host lab's daemons
# run in their own mount namespaces and use their own sockets: they do not count)
running_here() {
  local me p
  me=$(readlink /proc/self/ns/mnt)
  for p in $(pgrep -x "$1"); do
    [ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" = "$me" ] && return 0
  done
  return 1
}

# virtlogd: needed unless qemu.conf sets stdio_handler = "file"
if alive virtlogd; then
  log "virtlogd already started by the lab (pid $(cat "$STATE_DIR/virtlogd.pid"))"
elif running_here virtlogd; then
  log "virtlogd already running (not started by the lab)"
else
  start virtlogd virtlogd
fi

if running_here libvirtd && ! alive libvirtd; then
  die "a libvirtd not started by the lab is running but $URI does not answer; stop it or fix it"
fi
start libvirtd libvirtd

deadline=$(( $(now_ms) + TIMEOUT_S * 1000 ))
until virsh_ok && timeout 5 virsh -c "$URI" list >/dev/null 2>&1 </dev/null; do
  if [ "$(now_ms)" -ge "$deadline" ]; then
    tail -n 20 "$LOG_DIR/libvirtd.log" >&2 || true
    die "libvirt did not answer on $URI within ${TIMEOUT_S}s"
  fi
  if ! alive libvirtd; then
    tail -n 20 "$LOG_DIR/libvirtd.log" >&2 || true
    die "libvirtd exited during startup"
  fi
  sleep 0.1
done
take_lease
log "libvirt answers on $URI; startup took $(( $(now_ms) - t0 )) ms"
