#!/usr/bin/env bash
# Stop the daemons that scripts/lab/up.sh started (and only those), idempotently.
# Running domains are left alone: their QEMU processes keep running and libvirtd reconnects
# to them on the next up.sh. Pass --destroy-domains to destroy all running domains first.
set -euo pipefail

URI=qemu:///system
STATE_DIR=${VMPLACE_LAB_STATE_DIR:-/run/vmplace-lab}
log() { printf 'lab/down: %s\n' "$*" >&2; }

if [ "${1:-}" = "--destroy-domains" ] && timeout 5 virsh -c "$URI" version >/dev/null 2>&1 </dev/null; then
  for d in $(virsh -c "$URI" list --name </dev/null); do
    log "destroying running domain $d"
    virsh -c "$URI" destroy "$d" >/dev/null </dev/null || true
  done
fi

proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

stop() {
  local name=$1 pidf="$STATE_DIR/$1.pid" startf="$STATE_DIR/$1.start" pid
  [ -f "$pidf" ] || { log "$name: not started by the lab"; return; }
  pid=$(cat "$pidf")
  if [ -z "$pid" ] || [ "$(proc_start "$pid")" != "$(cat "$startf" 2>/dev/null)" ]; then
    log "$name: already gone"
    rm -f "$pidf" "$startf"; return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [ "$(proc_start "$pid")" = "$(cat "$startf")" ] || break
    sleep 0.1
  done
  if [ "$(proc_start "$pid")" = "$(cat "$startf")" ]; then
    log "$name (pid $pid) did not stop within 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf" "$startf"
  log "stopped $name (pid $pid)"
}

stop libvirtd
stop virtlogd
