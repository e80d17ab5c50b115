#!/usr/bin/env bash
# Runs the Go test suite (every package but the C library's, as test.sh's
# "test" step) over and over, to catch tests that fail only sometimes, and
# prints one line a run and the number of failed runs. Logs of failed runs
# are kept in the directory it names.
#
#   test/repeat.sh [-n PLAIN_RUNS] [-r RACE_RUNS]     (default 20 and 5)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

plain=20
race=5
while getopts "n:r:h" opt; do
	case $opt in
	n) plain=$OPTARG ;;
	r) race=$OPTARG ;;
	*) sed -n '2,7p' "$0"; exit 2 ;;
	esac
done

logs=$(mktemp -d /tmp/one-socket-repeat.XXXXXX)
pkgs=$(go list ./... | grep -v '^github.com/one-socket/one-socket/test$')
failed=0
run() {
	local name=$1
	shift
	if go test -count=1 "$@" $pkgs >"$logs/$name.log" 2>&1; then
		echo "$name ok"
		rm -f "$logs/$name.log"
	else
		echo "$name FAILED: $logs/$name.log"
		failed=$((failed + 1))
	fi
}
for i in $(seq "$plain"); do run "plain-$i"; done
for i in $(seq "$race"); do run "race-$i" -race; done
echo "failed runs: $failed of $((plain + race)) (logs of failures in $logs)"
[ "$failed" -eq 0 ]
