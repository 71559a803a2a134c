#!/usr/bin/env bash
# The main job for a new user: bring up a local libvirt lab (installing what is missing when
# run as root), then move a running VM's disks between two storage locations by a commit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "demo: run as root (it installs packages and uses qemu:///system)" >&2; exit 2; fi
bash scripts/lab/install.sh
[ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund
npm run --silent build
bash scripts/lab/up.sh
exec node scripts/demo.js "$@"
