#!/usr/bin/env bash
# Stop the daemons that scripts/lab/up.sh started (and only those), idempotently.
# Running domains are left alone: their QEMU processes keep running and libvirtd reconnects
# to them on the next up.sh. Pass --destroy-domains to destroy all running domains first.
# Leases (see up.sh): drops the caller's lease ($VMPLACE_LAB_OWNER_PID or the parent process)
# and leaves the daemons running while another live process holds one; --force ignores leases.
set -euo pipefail
FORCE=0; DESTROY=0
for a in "$@"; do
  case "$a" in
    --force) FORCE=1 ;;
    --destroy-domains) DESTROY=1 ;;
    *) echo "usage: down.sh [--force] [--destroy-domains]" >&2; exit 2 ;;
  esac
done

URI=qemu:///system
STATE_DIR=${VMPLACE_LAB_STATE_DIR:-/run/vmplace-lab}
log() { printf 'lab/down: %s\n' "$*" >&2; }

proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

# etcd members started by src/lab/etcd.ts whose owning test process is gone (see
# src/lab/etcd-registry.ts: $STATE_DIR/etcd/PID holds "START OWNER OWNER_START" and the data
# dir). Members of a live owner are never touched; this runs regardless of leases.
live_start() { awk '$3 != "Z" {print $22}' "/proc/$1/stat" 2>/dev/null; } # zombies count as gone
reap_etcd() {
  local f pid start owner ostart datadir owner_alive
  for f in "$STATE_DIR"/etcd/*; do
    [ -f "$f" ] || continue
    pid=$(basename "$f")
    read -r start owner ostart <"$f" || true
    datadir=$(sed -n 2p "$f")
    owner_alive=0
    [ -n "$owner" ] && [ "$(proc_start "$owner")" = "$ostart" ] && owner_alive=1
    if [ -z "$start" ] || [ "$(live_start "$pid")" != "$start" ]; then
      # a dead member of a live owner may be restarted on its data: keep that
      if [ "$owner_alive" = 0 ]; then case "$datadir" in *.etcd) rm -rf -- "$datadir" ;; esac; fi
      rm -f "$f"; continue
    fi
    [ "$owner_alive" = 1 ] && continue
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [ "$(live_start "$pid")" = "$start" ] || break; sleep 0.1; done
    # stop members before removing their data
    case "$datadir" in *.etcd) rm -rf -- "$datadir" ;; esac
    rm -f "$f"
    log "killed stale etcd member (pid $pid, owner $owner gone)"
  done
}
reap_etcd

# netfilter rules of src/lab/partition.ts whose owning test process is gone (tagged
# "vmplace-lab-partition:OWNER:OWNER_START"); rules of live owners stay.
reap_partitions() {
  command -v iptables >/dev/null || return 0
  local line rule tag owner ostart spec
  iptables -w 5 -S OUTPUT 2>/dev/null | grep -- 'vmplace-lab-partition:' | while IFS= read -r line; do
    rule=${line#-A OUTPUT }
    tag=$(printf '%s\n' "$rule" | grep -o 'vmplace-lab-partition:[0-9]*:[0-9]*')
    owner=$(printf '%s' "$tag" | cut -d: -f2); ostart=$(printf '%s' "$tag" | cut -d: -f3)
    [ "$(proc_start "$owner")" = "$ostart" ] && continue
    read -ra spec <<<"${rule//\"/}"
    if iptables -w 5 -D OUTPUT "${spec[@]}"; then log "removed stale partition rule ($tag)"; fi
  done || true
}
reap_partitions

owner=${VMPLACE_LAB_OWNER_PID:-$PPID}
rm -f "$STATE_DIR/leases/$owner"
if [ "$FORCE" = 0 ] && [ -d "$STATE_DIR/leases" ]; then
  holders=()
  for f in "$STATE_DIR"/leases/*; do
    [ -e "$f" ] || continue
    p=$(basename "$f")
    if [ "$(proc_start "$p")" = "$(cat "$f")" ]; then holders+=("$p"); else rm -f "$f"; fi
  done
  if [ ${#holders[@]} -gt 0 ]; then
    log "leaving libvirt running: still leased by pid ${holders[*]} (use --force to stop anyway)"
    exit 0
  fi
fi

if [ "$DESTROY" = 1 ] && timeout 5 virsh -c "$URI" version >/dev/null 2>&1 </dev/null; then
  for d in $(virsh -c "$URI" list --name </dev/null); do
    log "destroying running domain $d"
    virsh -c "$URI" destroy "$d" >/dev/null </dev/null || true
  done
fi

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
