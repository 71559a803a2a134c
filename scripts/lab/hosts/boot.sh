#!/usr/bin/env bash
# The "init" of one lab hypervisor host; scripts/lab/hosts-up.sh runs it as
#
#   ip netns exec NS unshare --mount --uts --propagation private tini -s -- boot.sh NAME ADDR HOSTDIR CSVDIR
#
# Inside its own network, mount and UTS namespaces it: sets the hostname, mounts a tmpfs on
# /run, bind-mounts the host's private copies of /etc/libvirt, /etc/ssh, /root, /tmp and
# /var/{lib,cache,log}/libvirt (prepared by hosts-up.sh under HOSTDIR/fs), mounts a tmpfs on
# /srv with the host's own storage at /srv/vmplace and the cluster shared storage (CSVDIR, the
# same directory in every host) at /srv/vmplace-csv, starts virtlogd and libvirtd, and finally
# becomes `sshd -D` listening on ADDR only. tini -s stays PID 1's stand-in: it reaps QEMU
# promptly (see /work/shared/LAB.md "Reaping matters").
# Mounts made here live in the private mount namespace and vanish with its last process.
set -euo pipefail
NAME=${1:?usage: boot.sh NAME ADDR HOSTDIR CSVDIR}
ADDR=${2:?}
HOSTDIR=${3:?}
CSVDIR=${4:?}
log() { printf '%s hosts/boot[%s]: %s\n' "$(date +%T.%3N)" "$NAME" "$*" >&2; }

hostname "$NAME"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/libvirt /run/sshd /run/lock
chmod 0755 /run/sshd

for d in etc/libvirt etc/ssh root tmp var/lib/libvirt var/cache/libvirt var/log/libvirt; do
  mount --bind "$HOSTDIR/fs/$d" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /srv
mkdir -p /srv/vmplace /srv/vmplace-csv
mount --bind "$HOSTDIR/storage" /srv/vmplace
mount --bind "$CSVDIR" /srv/vmplace-csv

ip link set lo up
log "mounts ready; starting virtlogd and libvirtd"
virtlogd -d
libvirtd -d
log "starting sshd on $ADDR"
exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
