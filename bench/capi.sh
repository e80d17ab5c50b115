#!/usr/bin/env bash
# Measures what libspbroker.a costs a C host, for both builds: archive
# size, growth of a trivial host binary, threads, time per call and per
# pairing (Go path, pure C path in a forked child, runtime-free build).
#
#   bench/capi.sh [-n CALLS] [-p PAIRS]
set -euo pipefail

calls=1000000
pairs=2000
while getopts "n:p:h" opt; do
	case $opt in
	n) calls=$OPTARG ;;
	p) pairs=$OPTARG ;;
	*) sed -n '2,6p' "$0"; exit 2 ;;
	esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'if [ -n "$bpid" ]; then kill "$bpid"; wait "$bpid" || true; fi; rm -rf "$work"' EXIT
bpid=
cc=${CC:-cc}

cd "$top"
go build -buildmode=c-archive -trimpath -o "$work/go/libspbroker.a" ./capi
mkdir -p "$work/nogo"
"$cc" -std=gnu11 -O2 -Iinclude -DSPBROKER_NO_GO -c capi/spbroker_c.c -o "$work/nogo/spbroker_c.o"
"$cc" -std=gnu11 -O2 -Iinclude -DSPBROKER_NO_GO -c capi/shim.c -o "$work/nogo/shim.o"
ar rcs "$work/nogo/libspbroker.a" "$work/nogo/spbroker_c.o" "$work/nogo/shim.o"
go build -o "$work/one-socket" ./cmd/one-socket

size() { stat -c %s "$1"; }
echo "archive_bytes go=$(size "$work/go/libspbroker.a") runtime_free=$(size "$work/nogo/libspbroker.a")"

# A trivial host: one call, so that the linker keeps the library.
cat >"$work/trivial.c" <<'C'
#include <socketpair-broker/helper.h>
int main(void) { return sp_broker_message_validate(0, 0, 0, 0) == -1 ? 0 : 1; }
C
cat >"$work/plain.c" <<'C'
int main(void) { return 0; }
C
"$cc" -O2 -o "$work/plain" "$work/plain.c"
for b in go nogo; do
	"$cc" -O2 -Iinclude -o "$work/trivial-$b" "$work/trivial.c" "$work/$b/libspbroker.a" -pthread
	cp "$work/trivial-$b" "$work/trivial-$b.stripped"
	strip "$work/trivial-$b.stripped"
done
cp "$work/plain" "$work/plain.stripped"; strip "$work/plain.stripped"
echo "host_bytes plain=$(size "$work/plain") go=$(size "$work/trivial-go") runtime_free=$(size "$work/trivial-nogo")" \
	"stripped: plain=$(size "$work/plain.stripped") go=$(size "$work/trivial-go.stripped") runtime_free=$(size "$work/trivial-nogo.stripped")"

sock=$work/one.socket
"$work/one-socket" --socket "$sock" --log-level warn &
bpid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

for b in go nogo; do
	"$cc" -O2 -Iinclude -o "$work/capibench-$b" bench/capi/capibench.c "$work/$b/libspbroker.a" -pthread
done
echo "== Go archive, loading process (Go path)"
"$work/capibench-go" -n "$calls" -p "$pairs" "$sock"
echo "== Go archive, forked child (pure C path)"
"$work/capibench-go" -c -n "$calls" -p "$pairs" "$sock"
echo "== runtime-free build"
"$work/capibench-nogo" -n "$calls" -p "$pairs" "$sock"
