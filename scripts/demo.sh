#!/usr/bin/env bash
# The embedded default, end to end: a VM-like disk is protected into a local-folder
# repository, changed, protected again incrementally (with a changed-extent list, as
# CBT reports it), restored, and verified byte for byte. Everything stays in ./lifeboat-demo.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${LIFEBOAT_DEMO_DIR:-$here/lifeboat-demo}
size=${LIFEBOAT_DEMO_SIZE:-512M}
export LIFEBOAT_PASSWORD=${LIFEBOAT_PASSWORD:-lifeboat-demo}
rm -rf "$work" && mkdir -p "$work" && cd "$work"

make_disk() { python3 "$here/tests/support/make_disk.py" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "create a $size VM disk image"
make_disk create vm1-disk0.img --size "$size" --seed 1
step "initialise an encrypted repository in $work/repo"
lifeboat repo init repo
step "full replication"
lifeboat replicate --repo repo --disk vm1-disk0 vm1-disk0.img
step "change 5% of the disk, then replicate only the changed extents"
make_disk mutate vm1-disk0.img --fraction 0.05 --seed 7 --extents-out changed.json
lifeboat replicate --repo repo --disk vm1-disk0 --changed-extents changed.json vm1-disk0.img
lifeboat points --repo repo
step "restore the latest point and compare"
lifeboat restore --repo repo --disk vm1-disk0 restored.img
sha256sum vm1-disk0.img restored.img
[ "$(sha256sum < vm1-disk0.img)" = "$(sha256sum < restored.img)" ] && echo "restore is byte-identical"
step "verify every block"
lifeboat check --repo repo --read-data
lifeboat repo info repo
