#!/usr/bin/env bash
# Build Lifeboat's vCenter simulator to build/vcsim/vcsim (GOPATH mode, against Debian's
# govmomi source; no Go module proxy needed). Rebuilds only when a source changed.
#   Needs: apt-get install -y golang-go golang-github-vmware-govmomi-dev
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out_dir="$repo/build/vcsim"
bin="$out_dir/vcsim"
gocode="${LIFEBOAT_GOCODE:-/usr/share/gocode}"
govmomi="$gocode/src/github.com/vmware/govmomi/simulator"

go_bin="${GO:-$(command -v go || true)}"
if [ -z "$go_bin" ] && [ -x /usr/lib/go/bin/go ]; then go_bin=/usr/lib/go/bin/go; fi
if [ -z "$go_bin" ] || [ ! -x "$go_bin" ]; then
    echo "build.sh: 'go' not found${go_bin:+ at $go_bin}. Install it with: apt-get install -y golang-go" >&2
    exit 2
fi
if [ ! -d "$govmomi" ]; then
    echo "build.sh: govmomi source not found at $govmomi." >&2
    echo "          Install it with: apt-get install -y golang-github-vmware-govmomi-dev" >&2
    exit 2
fi

mkdir -p "$out_dir"
exec 9>"$out_dir/.build.lock"
if command -v flock >/dev/null; then flock 9; fi # concurrent test runs build once

# The stamp names every input: our sources, the go version and the govmomi package version.
stamp_now="$(
    cd "$here" && sha256sum ./*.go build.sh
    "$go_bin" version
    dpkg-query -W -f='${Version}\n' golang-github-vmware-govmomi-dev 2>/dev/null || true
)"
stamp_file="$out_dir/.stamp"
if [ -x "$bin" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_now" ]; then
    exit 0
fi

gopath="$out_dir/gopath"
mkdir -p "$gopath/src"
ln -sfn "$here" "$gopath/src/lifeboatsim"
cache="${GOCACHE:-$out_dir/gocache}"

cd "$gopath/src/lifeboatsim"
if ! GO111MODULE=off GOFLAGS= GOPROXY=off GOPATH="$gopath:$gocode" GOCACHE="$cache" \
        "$go_bin" build -o "$bin.tmp" . ; then
    rm -f "$bin.tmp"
    echo "build.sh: go build failed" >&2
    exit 1
fi
mv -f "$bin.tmp" "$bin"
printf '%s' "$stamp_now" > "$stamp_file"
echo "built $bin"
