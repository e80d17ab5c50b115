#!/bin/bash
# release-source.sh TAG: writes cmd/one-socket/testdata/TAG.tar.gz, the Go
# sources (no tests) that build the daemon of release TAG. The upgrade
# tests build the old daemon from this file, so that they need neither git
# nor a clone with tags; run this once per release whose state a newer
# daemon must take over, and commit the file.
set -euo pipefail
tag=${1:?usage: release-source.sh TAG}
root=$(git rev-parse --show-toplevel)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$tag" | tar -x -C "$tmp"
# Only what `go build ./cmd/one-socket` of that release compiles.
files=$(cd "$tmp" && go list -deps -f '{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}} {{end}}{{range .CgoFiles}}{{$d}}/{{.}} {{end}}{{end}}' ./cmd/one-socket |
	tr ' ' '\n' | grep "^$tmp/" | sed "s|^$tmp/||" | sort)
out=cmd/one-socket/testdata/$tag.tar.gz
# shellcheck disable=SC2086 # one word per file
git archive --format=tar "$tag" go.mod go.sum LICENSE $files | gzip -9n >"$out"
echo "release-source.sh: $out: $(echo "$files" | wc -l) files, $(wc -c <"$out") bytes"
