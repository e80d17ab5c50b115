#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-echo.sh ONE_SOCKET ECHO - pair the echo example's two sides through a
# broker started here on a private socket, and check the round trip: once
# with the server waiting first, once with the client first.
set -eu

# meson passes paths relative to the working directory; make them paths
# even without a slash, so that they are not looked up in $PATH.
abspath() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s\n' "$PWD/$1" ;;
	esac
}
broker=$(abspath "$1")
echo=$(abspath "$2")

dir=$(mktemp -d "${TMPDIR:-/tmp}/spbroker-echo.XXXXXX")
bpid=
cleanup() {
	if [ -n "$bpid" ]; then
		kill "$bpid" 2>/dev/null || :
		wait "$bpid" 2>/dev/null || :
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

sock=$dir/one.socket
"$broker" --socket "$sock" --log-level warn &
bpid=$!

# Wait (at most 10 s) for the broker's socket to appear.
i=0
while [ ! -S "$sock" ]; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$bpid" 2>/dev/null; then
		echo "run-echo: the broker did not start" >&2
		exit 1
	fi
	sleep 0.1
done

fail=0

# check KEY FIRST MESSAGE: start side FIRST, then the other; the client
# must print MESSAGE.
check() {
	key=$1
	first=$2
	msg=$3
	if [ "$first" = server ]; then
		timeout 20 "$echo" "$sock" "$key" server &
		spid=$!
		sleep 0.2
		got=$(timeout 20 "$echo" "$sock" "$key" client "$msg") || got="(client failed)"
	else
		printf '%s\n' "$msg" | timeout 20 "$echo" "$sock" "$key" client >"$dir/out" &
		cpid=$!
		sleep 0.2
		timeout 20 "$echo" "$sock" "$key" server &
		spid=$!
		wait "$cpid" && got=$(cat "$dir/out") || got="(client failed)"
	fi
	wait "$spid" || got="$got (server failed)"
	if [ "$got" = "$msg" ]; then
		echo "ok: $first first: $msg"
	else
		echo "FAIL: $first first: want '$msg', got '$got'" >&2
		fail=1
	fi
}

check key-1 server "hello through the broker"
check key-2 client "hello again, from standard input"
exit $fail
