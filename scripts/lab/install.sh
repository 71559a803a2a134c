#!/usr/bin/env bash
# Install and configure a local libvirt/QEMU lab on Debian 12 (root, no systemd needed).
# Idempotent: re-running changes nothing once everything is in place.
#   - installs the packages below (apt-get update only when something is missing)
#   - writes a marked block into /etc/libvirt/qemu.conf (root user, no security driver,
#     no dynamic ownership) and comments out conflicting settings outside the block
#   - creates the directories libvirtd expects
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  openssh-server rsync tini busybox-static linux-image-amd64 cpio iproute2 xz-utils zstd openssl
  etcd-server etcd-client iptables chromium
)
QEMU_CONF=${VMPLACE_LAB_QEMU_CONF:-/etc/libvirt/qemu.conf}
BEGIN_MARK='# BEGIN vmplace-lab (managed by scripts/lab/install.sh)'
END_MARK='# END vmplace-lab'
MANAGED_KEYS=(user group security_driver dynamic_ownership)

log() { printf 'lab/install: %s\n' "$*" >&2; }
die() { printf 'lab/install: error: %s\n' "$*" >&2; exit 1; }

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

need_root_for=()
[ ${#missing[@]} -gt 0 ] && need_root_for+=("install packages: ${missing[*]}")

desired_block() {
  printf '%s\n' "$BEGIN_MARK"
  printf '%s\n' 'user = "root"' 'group = "root"' 'security_driver = "none"' 'dynamic_ownership = 0'
  printf '%s\n' "$END_MARK"
}

conf_ok() {
  [ -f "$QEMU_CONF" ] || return 1
  # the managed block must be present verbatim, at the top, and no other active line may set a managed key
  [ "$(head -n 6 "$QEMU_CONF")" = "$(desired_block)" ] || return 1
  local k
  for k in "${MANAGED_KEYS[@]}"; do
    if sed '1,6d' "$QEMU_CONF" | grep -Eq "^[[:space:]]*${k}[[:space:]]*="; then return 1; fi
  done
  return 0
}
conf_ok || need_root_for+=("configure $QEMU_CONF")

# libvirt 9.0 looks up its built-in default user/group (libvirt-qemu) before it reads
# qemu.conf, so they must exist even though qemu.conf then says root. Debian creates them in
# libvirt-daemon-system, which we do not install.
getent group libvirt-qemu >/dev/null || need_root_for+=("create group libvirt-qemu")
getent passwd libvirt-qemu >/dev/null || need_root_for+=("create user libvirt-qemu")

DIRS=(/etc/libvirt /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt/qemu /var/lib/libvirt/images
      /var/cache/libvirt/qemu /var/cache/vmplace-lab)
for d in "${DIRS[@]}"; do [ -d "$d" ] || need_root_for+=("create $d"); done

if [ ${#need_root_for[@]} -eq 0 ]; then
  log "already installed and configured; nothing to do"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "not running as root, but these steps need root:"
  for s in "${need_root_for[@]}"; do log "  - $s"; done
  die "re-run as root (e.g. sudo $0)"
fi

if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

mkdir -p "${DIRS[@]}"

if ! getent group libvirt-qemu >/dev/null; then
  log "creating system group libvirt-qemu"
  groupadd --system libvirt-qemu
fi
if ! getent passwd libvirt-qemu >/dev/null; then
  log "creating system user libvirt-qemu"
  useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
    --shell /usr/sbin/nologin libvirt-qemu
fi

if ! conf_ok; then
  log "configuring $QEMU_CONF"
  tmp=$(mktemp "$QEMU_CONF.XXXXXX")
  {
    desired_block
    if [ -f "$QEMU_CONF" ]; then
      # drop our previous block, comment out active settings of the keys we manage
      # (libvirt's config parser takes the first occurrence of a key)
      awk -v b="$BEGIN_MARK" -v e="$END_MARK" '
        $0 == b { skip = 1; next }
        $0 == e { skip = 0; next }
        skip { next }
        /^[[:space:]]*(user|group|security_driver|dynamic_ownership)[[:space:]]*=/ {
          print "#vmplace-lab# " $0; next }
        { print }
      ' "$QEMU_CONF"
    fi
  } >"$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$QEMU_CONF"
fi
conf_ok || die "could not configure $QEMU_CONF"
log "done"
