#!/usr/bin/env bash
# Bring up a two-host libvirt lab on this machine, idempotently:
#
#   hosts-up.sh [--prefix vmpl] [--net 10.231.0]
#
# Two hypervisor hosts, hv1 (NET.11) and hv2 (NET.12), each in its own network namespace
# (PREFIX-hv1, PREFIX-hv2) with its own mount and UTS namespace, libvirtd + virtlogd, and an
# OpenSSH server on its own address (see scripts/lab/hosts/boot.sh). Their veth peers sit in a
# bridge PREFIX-br in the root namespace, which holds NET.1: the root namespace is the
# management box (where vmplace and the tests run). The /24 exists only on that bridge and in
# the namespaces; the hosts have no default route and this machine does not forward.
#
# Storage, seen from inside a host: /srv/vmplace/local (the host's own disks), /srv/vmplace/state
# (its state dir), /srv/vmplace-csv (cluster shared storage: ONE directory bind-mounted into
# both hosts). From the management box they are under $DATA (see the env file).
#
# Credentials, generated once per lab and kept across up/down (so known_hosts stay valid):
#   $DATA/mgmt/id_ed25519, $DATA/mgmt/known_hosts  - management box -> hosts
#   each host: /root/.ssh/id_ed25519 (its own key, authorised on the other host),
#              /root/.ssh/known_hosts (both hosts' keys: host keys are checked everywhere)
# Prints the env file (also written to $STATE/env) on stdout; logs go to stderr.
# Safe with no TTY and no stdin (CI). Needs root, iproute2, util-linux, tini, libvirt, openssh.
set -euo pipefail

PREFIX=vmpl
NET=10.231.0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
    --net) NET=${2:?--net needs a value like 10.231.0}; shift 2 ;;
    *) echo "usage: hosts-up.sh [--prefix NAME] [--net A.B.C]" >&2; exit 2 ;;
  esac
done
[[ "$PREFIX" =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "hosts-up: --prefix must be [a-z][a-z0-9]{0,7}" >&2; exit 2; }
[[ "$NET" =~ ^(10|192\.168|172\.(1[6-9]|2[0-9]|3[01]))(\.[0-9]{1,3}){1,2}$ ]] && [ "$(tr -cd . <<<"$NET" | wc -c)" = 2 ] \
  || { echo "hosts-up: --net must be the first three octets of a private /24, e.g. 10.231.0" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lab/detach.sh
. "$HERE/detach.sh"
STATE=${VMPLACE_HOSTS_STATE_DIR:-/run/vmplace-hosts/$PREFIX}
DATA=${VMPLACE_HOSTS_DATA_DIR:-/var/lib/vmplace-hosts/$PREFIX}
TIMEOUT_S=${VMPLACE_HOSTS_UP_TIMEOUT:-60}
BR=$PREFIX-br
MGMT_ADDR=$NET.1
HOSTS=(hv1 hv2)
declare -A ADDR=([hv1]=$NET.11 [hv2]=$NET.12)

log() { printf 'lab/hosts-up: %s\n' "$*" >&2; }
die() { printf 'lab/hosts-up: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
t0=$(now_ms)

[ "$(id -u)" -eq 0 ] || die "must run as root"
for b in ip unshare tini libvirtd virtlogd virsh sshd ssh ssh-keygen rsync flock setsid; do
  command -v "$b" >/dev/null || die "$b not found: run scripts/lab/install.sh first"
done

mkdir -p "$STATE" "$DATA"
exec 9>"$STATE/lock"
flock -w "$TIMEOUT_S" 9 || die "another hosts-up/down holds $STATE/lock"
touch "$STATE/made"
made() { grep -qxF "$1" "$STATE/made" || echo "$1" >>"$STATE/made"; }

MGMT_KEY=$DATA/mgmt/id_ed25519
MGMT_KH=$DATA/mgmt/known_hosts
ssh_mgmt() {
  local addr=$1; shift
  ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$MGMT_KH" \
    -o IdentitiesOnly=yes -i "$MGMT_KEY" -o ConnectTimeout=2 -T -l root -- "$addr" "$@" </dev/null
}

# alive NAME: the host process recorded under NAME is still the one we started
alive() {
  local pidf="$STATE/$1.pid" startf="$STATE/$1.start" pid
  [ -f "$pidf" ] && [ -f "$startf" ] || return 1
  pid=$(cat "$pidf")
  [ -n "$pid" ] && [ "$(proc_start "$pid")" = "$(cat "$startf")" ]
}

write_env() {
  local tmp="$STATE/env.tmp" h H
  {
    echo "# written by scripts/lab/hosts-up.sh; KEY=VALUE, no quoting (values never contain spaces)"
    echo "VMPLACE_HOSTS_PREFIX=$PREFIX"
    echo "VMPLACE_HOSTS_NAMES=$(IFS=,; echo "${HOSTS[*]}")"
    echo "VMPLACE_HOSTS_STATE_DIR=$STATE"
    echo "VMPLACE_HOSTS_DATA_DIR=$DATA"
    echo "MGMT_ADDR=$MGMT_ADDR"
    echo "MGMT_BRIDGE=$BR"
    echo "MGMT_KEY=$MGMT_KEY"
    echo "MGMT_KNOWN_HOSTS=$MGMT_KH"
    echo "CSV_PATH=/srv/vmplace-csv"
    echo "CSV_MGMT_PATH=$DATA/csv"
    for h in "${HOSTS[@]}"; do
      H=${h^^}
      echo "${H}_NS=$PREFIX-$h"
      echo "${H}_ADDR=${ADDR[$h]}"
      echo "${H}_PORT=22"
      echo "${H}_URI=qemu+ssh://root@${ADDR[$h]}/system"
      echo "${H}_LINK=eth0"
      echo "${H}_STORAGE=/srv/vmplace/local"
      echo "${H}_STATE_DIR=/srv/vmplace/state"
      echo "${H}_STORAGE_MGMT_PATH=$DATA/$h/storage/local"
      echo "${H}_TRANSFER_KEY=/root/.ssh/id_ed25519"
      echo "${H}_TRANSFER_KNOWN_HOSTS=/root/.ssh/known_hosts"
    done
  } >"$tmp"
  mv -f "$tmp" "$STATE/env"
}

hosts_answer() {
  local h
  for h in "${HOSTS[@]}"; do
    alive "$h" || return 1
    ssh_mgmt "${ADDR[$h]}" virsh -c qemu:///system list >/dev/null 2>&1 || return 1
  done
}

if [ -f "$MGMT_KEY" ] && hosts_answer; then
  write_env
  log "hosts already up; nothing started ($(( $(now_ms) - t0 )) ms)"
  cat "$STATE/env"
  exit 0
fi

# ------------------------------------------------------------------ keys and host filesystems
mkdir -p "$DATA/mgmt" "$DATA/csv"
chmod 0700 "$DATA/mgmt"
[ -f "$MGMT_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "vmplace-lab-mgmt@$PREFIX" -f "$MGMT_KEY"

for h in "${HOSTS[@]}"; do
  fs=$DATA/$h/fs
  mkdir -p "$fs/etc/ssh" "$fs/root/.ssh" "$fs/tmp" "$fs/var/lib/libvirt/qemu" "$fs/var/lib/libvirt/images" \
    "$fs/var/cache/libvirt/qemu" "$fs/var/log/libvirt/qemu" "$DATA/$h/storage/local" "$DATA/$h/storage/state"
  chmod 1777 "$fs/tmp"
  chmod 0700 "$fs/root" "$fs/root/.ssh"
  if [ ! -d "$fs/etc/libvirt" ]; then cp -a /etc/libvirt "$fs/etc/libvirt"; fi
  # libvirt takes the first occurrence of a key: our settings go first. No cgroups: `ip netns
  # exec` mounts a fresh /sys without them, and several libvirtds on one kernel would share them.
  {
    echo '# vmplace two-host lab (scripts/lab/hosts-up.sh)'
    echo 'user = "root"'
    echo 'group = "root"'
    echo 'security_driver = "none"'
    echo 'dynamic_ownership = 0'
    echo 'cgroup_controllers = [ ]'
    grep -Ev '^[[:space:]]*(user|group|security_driver|dynamic_ownership|cgroup_controllers)[[:space:]]*=' /etc/libvirt/qemu.conf || true
  } >"$fs/etc/libvirt/qemu.conf"
  # each host needs its own host UUID, or libvirt refuses migrations "to the same host"
  [ -f "$DATA/$h/host-uuid" ] || cat /proc/sys/kernel/random/uuid >"$DATA/$h/host-uuid"
  printf 'host_uuid = "%s"\n' "$(cat "$DATA/$h/host-uuid")" >"$fs/etc/libvirt/libvirtd.conf"

  [ -f "$fs/etc/ssh/ssh_host_ed25519_key" ] \
    || ssh-keygen -q -t ed25519 -N '' -C "host-$h@$PREFIX" -f "$fs/etc/ssh/ssh_host_ed25519_key"
  [ -f "$fs/root/.ssh/id_ed25519" ] \
    || ssh-keygen -q -t ed25519 -N '' -C "root@$h.$PREFIX" -f "$fs/root/.ssh/id_ed25519"
  cat >"$fs/etc/ssh/sshd_config" <<EOF
# vmplace two-host lab: host $h (scripts/lab/hosts-up.sh)
ListenAddress ${ADDR[$h]}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
# ControlMaster multiplexing (virsh + file operations) opens many sessions on one connection
MaxSessions 64
MaxStartups 64:30:128
PrintMotd no
UseDNS no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
done

# known_hosts: the same content for the management box and both hosts
kh=$(for h in "${HOSTS[@]}"; do
  printf '%s %s\n' "${ADDR[$h]}" "$(cut -d' ' -f1,2 "$DATA/$h/fs/etc/ssh/ssh_host_ed25519_key.pub")"
done)
printf '%s\n' "$kh" >"$MGMT_KH"
for h in "${HOSTS[@]}"; do
  printf '%s\n' "$kh" >"$DATA/$h/fs/root/.ssh/known_hosts"
  {
    cat "$MGMT_KEY.pub"
    for o in "${HOSTS[@]}"; do [ "$o" = "$h" ] || cat "$DATA/$o/fs/root/.ssh/id_ed25519.pub"; done
  } >"$DATA/$h/fs/root/.ssh/authorized_keys"
  chmod 0600 "$DATA/$h/fs/root/.ssh/authorized_keys"
done

# ------------------------------------------------------------------ network
if ! ip link show "$BR" >/dev/null 2>&1; then
  ip link add "$BR" type bridge
  made "bridge $BR"
fi
ip addr show dev "$BR" | grep -qF " $MGMT_ADDR/24 " || ip addr add "$MGMT_ADDR/24" dev "$BR"
ip link set "$BR" up

for h in "${HOSTS[@]}"; do
  ns=$PREFIX-$h
  veth=$PREFIX-$h
  if ! ip netns list | grep -qE "^$ns( |$)"; then
    ip netns add "$ns"
    made "netns $ns"
  fi
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    made "veth $veth"
  fi
  ip link set "$veth" master "$BR" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr show dev eth0 | grep -qF " ${ADDR[$h]}/24 " || ip -n "$ns" addr add "${ADDR[$h]}/24" dev eth0
  ip -n "$ns" link set eth0 up
done

# ------------------------------------------------------------------ hosts
LOGDIR=$DATA/log
mkdir -p "$LOGDIR"
for h in "${HOSTS[@]}"; do
  if alive "$h"; then log "$h already running (pid $(cat "$STATE/$h.pid"))"; continue; fi
  if [ -n "$(ip netns pids "$PREFIX-$h")" ]; then
    die "namespace $PREFIX-$h has processes not recorded as ours; run hosts-down.sh first"
  fi
  # detached: the host must not hold this script's lock, or its caller's (detach.sh)
  detach ip netns exec "$PREFIX-$h" unshare --mount --uts --propagation private \
    tini -s -- bash "$HERE/hosts/boot.sh" "$h" "${ADDR[$h]}" "$DATA/$h" "$DATA/csv" \
    </dev/null >>"$LOGDIR/$h.log" 2>&1
  pid=$!
  start=""
  for _ in $(seq 1 20); do start=$(proc_start "$pid"); [ -n "$start" ] && break; sleep 0.05; done
  echo "$pid" >"$STATE/$h.pid"
  echo "$start" >"$STATE/$h.start"
  log "started $h at ${ADDR[$h]} (pid $pid, log $LOGDIR/$h.log)"
done

deadline=$(( $(now_ms) + TIMEOUT_S * 1000 ))
for h in "${HOSTS[@]}"; do
  until ssh_mgmt "${ADDR[$h]}" virsh -c qemu:///system list >/dev/null 2>&1; do
    if ! alive "$h"; then tail -n 30 "$LOGDIR/$h.log" >&2 || true; die "$h exited during startup"; fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      tail -n 30 "$LOGDIR/$h.log" >&2 || true
      die "$h did not answer (ssh + virsh) within ${TIMEOUT_S}s"
    fi
    sleep 0.1
  done
done
write_env
log "hosts up (${HOSTS[*]}); bring-up took $(( $(now_ms) - t0 )) ms"
cat "$STATE/env"
