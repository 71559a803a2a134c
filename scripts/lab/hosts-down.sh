#!/usr/bin/env bash
# Tear down what scripts/lab/hosts-up.sh made, and only that, idempotently:
#
#   hosts-down.sh [--prefix vmpl] [--purge]
#
# Stops every process inside the hosts' network namespaces (sshd, libvirtd, virtlogd and any
# QEMU: running guests die with their host), then deletes the veths, namespaces and bridge
# that hosts-up.sh recorded in $STATE/made. The private mounts vanish with the processes.
# Keys, host configuration and storage under $DATA are kept (a later hosts-up.sh reuses them,
# and known_hosts stay valid); --purge removes $DATA too.
set -euo pipefail
PREFIX=vmpl
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
    --purge) PURGE=1; shift ;;
    *) echo "usage: hosts-down.sh [--prefix NAME] [--purge]" >&2; exit 2 ;;
  esac
done
[[ "$PREFIX" =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "hosts-down: bad --prefix" >&2; exit 2; }
STATE=${VMPLACE_HOSTS_STATE_DIR:-/run/vmplace-hosts/$PREFIX}
DATA=${VMPLACE_HOSTS_DATA_DIR:-/var/lib/vmplace-hosts/$PREFIX}
log() { printf 'lab/hosts-down: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }

if [ ! -d "$STATE" ]; then
  log "nothing to tear down for prefix $PREFIX"
else
  exec 9>"$STATE/lock"
  flock -w 60 9 || { log "another hosts-up/down holds $STATE/lock"; exit 1; }
  touch "$STATE/made"

  # processes: everything in the namespaces we made (nothing else can be in them)
  while read -r kind name; do
    [ "$kind" = netns ] || continue
    ip netns list | grep -qE "^$name( |$)" || continue
    pids=$(ip netns pids "$name" || true)
    [ -z "$pids" ] && continue
    log "stopping processes in $name: $(echo $pids)"
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -z "$(ip netns pids "$name" 2>/dev/null)" ] && break
      sleep 0.1
    done
    pids=$(ip netns pids "$name" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      log "sending SIGKILL to $(echo $pids) in $name"
      kill -KILL $pids 2>/dev/null || true
      sleep 0.3
    fi
  done <"$STATE/made"

  # links and namespaces, newest first
  tac "$STATE/made" | while read -r kind name; do
    case "$kind" in
      veth) ip link del "$name" 2>/dev/null && log "deleted veth $name" || true ;;
      netns) ip netns del "$name" 2>/dev/null && log "deleted netns $name" || true ;;
      bridge) ip link del "$name" 2>/dev/null && log "deleted bridge $name" || true ;;
    esac
  done
  rm -f "$STATE"/*.pid "$STATE"/*.start "$STATE/env" "$STATE/made"
  rm -f "$STATE/lock"
  rmdir "$STATE" 2>/dev/null || true
fi

if [ "$PURGE" = 1 ] && [ -d "$DATA" ]; then
  rm -rf -- "$DATA"
  log "removed $DATA"
fi
log "done"
