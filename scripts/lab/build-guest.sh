#!/usr/bin/env bash
# Build the lab guest: Debian's kernel plus a busybox-static initramfs that runs
# scripts/lab/guest/init (a writer of verifiable, acknowledged records to every virtio disk).
#
#   build-guest.sh OUTDIR
#
# Output goes to OUTDIR/<hash>/{vmlinuz,initrd.img}, where <hash> covers the init script,
# busybox, the kernel image and the modules: an existing build is reused as is.
# Prints two lines on stdout: "kernel=PATH" and "initrd=PATH".
# VMPLACE_GUEST_KVER selects the kernel version (default: newest /boot/vmlinuz-* that has
# modules under /lib/modules).
set -euo pipefail

OUTDIR=${1:?usage: build-guest.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
INIT=$HERE/guest/init
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk)
die() { printf 'lab/build-guest: error: %s\n' "$*" >&2; exit 1; }

# busybox-static installs a static /bin/busybox; a dynamic one would not run in the initramfs
BUSYBOX=${VMPLACE_GUEST_BUSYBOX:-/bin/busybox}
if [ ! -x "$BUSYBOX" ] || [[ "$(ldd "$BUSYBOX" 2>&1 || true)" != *"not a dynamic executable"* ]]; then BUSYBOX=""; fi
[ -n "$BUSYBOX" ] || die "busybox-static not found: run scripts/lab/install.sh"

kver=${VMPLACE_GUEST_KVER:-}
if [ -z "$kver" ]; then
  for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V -r); do
    [ -d "/lib/modules/$k" ] && { kver=$k; break; }
  done
fi
[ -n "$kver" ] || die "no kernel with modules found (install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$kver
[ -f "$KERNEL" ] || die "$KERNEL not found"

# find each module (.ko, .ko.xz or .ko.zst)
declare -A modpath
for m in "${MODULES[@]}"; do
  f=$(find "/lib/modules/$kver/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n1)
  # built into the kernel: nothing to load
  if [ -z "$f" ]; then
    grep -q "/$m.ko" "/lib/modules/$kver/modules.builtin" 2>/dev/null && continue
    die "module $m not found for kernel $kver"
  fi
  modpath[$m]=$f
done

hash=$( {
  sha256sum "$INIT" "$BUSYBOX" "$KERNEL" "$0"
  for m in "${MODULES[@]}"; do [ -n "${modpath[$m]:-}" ] && sha256sum "${modpath[$m]}"; done
} | awk '{print $1}' | sha256sum | cut -c1-16)

dest=$OUTDIR/$hash
if [ -f "$dest/vmlinuz" ] && [ -f "$dest/initrd.img" ]; then
  echo "kernel=$dest/vmlinuz"; echo "initrd=$dest/initrd.img"; exit 0
fi

mkdir -p "$OUTDIR"
work=$(mktemp -d "$OUTDIR/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$BUSYBOX" "$root/bin/busybox"
# create applet links from the busybox we ship, not the host's
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
install -m 0755 "$INIT" "$root/init"
for m in "${MODULES[@]}"; do
  f=${modpath[$m]:-}; [ -n "$f" ] || continue
  case "$f" in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -q -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done
(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -n -1 >"$work/initrd.img"
cp "$KERNEL" "$work/vmlinuz"
chmod 0644 "$work/vmlinuz" "$work/initrd.img"
mkdir -p "$work/out"
mv "$work/vmlinuz" "$work/initrd.img" "$work/out/"
# publish atomically: a concurrent build of the same hash loses the rename harmlessly
mv -T "$work/out" "$dest" 2>/dev/null || [ -f "$dest/initrd.img" ] || die "could not publish $dest"
echo "kernel=$dest/vmlinuz"; echo "initrd=$dest/initrd.img"
