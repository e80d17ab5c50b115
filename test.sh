#!/usr/bin/env bash
# test.sh runs every check this repository has, in order, and keeps going
# after a failure so that one run shows everything that is wrong. It exits
# non-zero if any check failed. CI runs exactly this script.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

passed=0
failed=()
skipped=()

# step NAME COMMAND...: run one check and record the outcome. Exit status
# 77 means the check could not run here (a missing tool, or not root); it
# says why. On a newcomer's machine that is a skip, reported at the end;
# with ONE_SOCKET_REQUIRE_ALL=1, which .ci/run sets, it is a failure, so
# that CI runs every check.
step() {
	local name=$1 rc=0
	shift
	echo "==> $name: $*"
	"$@" || rc=$?
	if [ "$rc" -eq 0 ]; then
		echo "--- ok: $name"
		passed=$((passed + 1))
	elif [ "$rc" -eq 77 ] && [ "${ONE_SOCKET_REQUIRE_ALL:-0}" != 1 ]; then
		echo "--- SKIPPED: $name"
		skipped+=("$name")
	else
		[ "$rc" -eq 77 ] && echo "skipped, and ONE_SOCKET_REQUIRE_ALL=1 forbids it"
		echo "--- FAILED: $name"
		failed+=("$name")
	fi
}

gofmt_clean() {
	local out
	out=$(gofmt -l .) || return 1
	if [ -n "$out" ]; then
		echo "these files need gofmt -w:"
		echo "$out"
		return 1
	fi
}

step gofmt gofmt_clean
step vet go vet ./...
# staticcheck is pinned by the tool directive in go.mod.
step staticcheck go tool staticcheck ./...
# Every Go test but the C library's, which is a step of its own below.
# test/systemd runs only inside the containers of the systemd step below.
go_packages() { go list ./... | grep -v -e '^github.com/one-socket/one-socket/test$' -e '^github.com/one-socket/one-socket/test/systemd$'; }
step test go test -race -count=1 $(go_packages)
# The C library's conformance suite: both archives (libspbroker.a and
# libspbroker-c.a) as meson installs them, with and without Go and with
# sanitizers, linked through pkg-config spbroker and spbroker-c, run in
# forked children and under valgrind, and linked into C and C++ consumers
# through pkg-config and meson.
step c-library go test -race -count=1 ./test/
# The Kubernetes manifests, decoded strictly against the API types by a
# module of their own (k8s.io stays out of the main module), and played
# on this machine as a node when run as root.
# The module has its own go.mod; it is checked with the main module's
# staticcheck, built from the version go.mod pins.
k8s_manifests() (
	bin=$(mktemp -d) && trap 'rm -rf "$bin"' EXIT &&
	go build -o "$bin/staticcheck" honnef.co/go/tools/cmd/staticcheck &&
	staticcheck=$bin/staticcheck &&
	cd deploy/kubernetes/validate &&
		go vet ./... &&
		"$staticcheck" ./... &&
		go test -race -count=1 ./...
)
step kubernetes k8s_manifests
# The Python client, against the Go encoder and the real daemon.
step python python3 -m unittest discover -s python/tests -t python
# The Debian and RPM packages: their versions agree with meson.build; the
# .debs pass lintian, install, work installed and purge (as root); the
# RPMs hold what they should.
step pkg-versions test/packaging/versions.sh
step deb test/packaging/deb.sh
step rpm test/packaging/rpm.sh
# The daemon under a real systemd: Debian 12 booted in systemd-nspawn, a
# container for each test: socket activation, STATUS=, restart, SIGKILL
# and stop with waiting clients, a broken policy at start and at reload,
# the .deb's install, upgrade and purge, systemd-analyze security (as
# root; the .debs are the deb step's). doc/testing.md says more.
step systemd test/systemd/nspawn.sh
# Short fuzz runs of the wire decoder, the policy parser, the control
# protocol's request decoder and the escaping of keys in log lines; a
# finding is saved under the package's testdata/fuzz and replayed by
# every go test.
# The budgets are counts (5 to 15 s each here), not durations: with a
# duration, Go 1.26's fuzzing coordinator can fail a run that found
# nothing with "context deadline exceeded" (go.dev/issue/75804).
step fuzz go test -run='^$' -fuzz=FuzzDecodeValidate -fuzztime=400000x -fuzzminimizetime=500x ./libspbroker/
step fuzz-policy go test -run='^$' -fuzz=FuzzParse -fuzztime=400000x -fuzzminimizetime=500x ./internal/policy/
step fuzz-control go test -run='^$' -fuzz=FuzzDecodeRequest -fuzztime=300000x -fuzzminimizetime=500x ./internal/control/
step fuzz-logsafe go test -run='^$' -fuzz=FuzzKey -fuzztime=100000x -fuzzminimizetime=500x ./internal/logsafe/

echo
if [ ${#skipped[@]} -gt 0 ]; then
	echo "skipped (see each one's reason above; CI runs them): ${skipped[*]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}"
fi
echo "checks: $passed passed, ${#skipped[@]} skipped, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
