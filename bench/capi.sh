#!/usr/bin/env bash
# Measures what libspbroker.a costs a C host, for both archives that meson
# installs (libspbroker.a, the Go c-archive, and libspbroker-c.a, the
# runtime-free one): archive size, growth of a trivial host binary,
# threads, time per call and per pairing (Go path, pure C path in a forked
# child, runtime-free build). Needs meson, ninja, pkg-config and Go.
#
#   bench/capi.sh [-n CALLS] [-p PAIRS]
set -euo pipefail

calls=1000000
pairs=2000
while getopts "n:p:h" opt; do
	case $opt in
	n) calls=$OPTARG ;;
	p) pairs=$OPTARG ;;
	*) sed -n '2,8p' "$0"; exit 2 ;;
	esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/bench/common.sh"
cc=${CC:-cc}

cd "$top"
# Both archives as meson builds and installs them (default options:
# buildtype debugoptimized, -O2 -g), linked with what pkg-config says.
CC=$cc meson setup "$work/build" "$top" --prefix="$work/prefix" -Ddaemon=disabled >"$work/meson.log" ||
	{ cat "$work/meson.log" >&2; exit 1; }
ninja -C "$work/build" install >>"$work/meson.log" || { cat "$work/meson.log" >&2; exit 1; }
PKG_CONFIG_PATH=$(dirname "$(find "$work/prefix" -name spbroker.pc)")
export PKG_CONFIG_PATH
# go: pkg-config spbroker, the Go c-archive; nogo: spbroker-c.
pkg() { case $1 in go) echo spbroker ;; nogo) echo spbroker-c ;; esac; }
archive() { echo "$(pkg-config --variable=libdir "$(pkg "$1")")/lib$(pkg "$1").a"; }
build_tools one-socket

size() { stat -c %s "$1"; }
cp "$(archive nogo)" "$work/nogo-stripped.a"
strip --strip-debug "$work/nogo-stripped.a"
echo "archive_bytes go=$(size "$(archive go)") runtime_free=$(size "$(archive nogo)") runtime_free_without_debug=$(size "$work/nogo-stripped.a")"

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
	# shellcheck disable=SC2046 # pkg-config's output is a list of words
	"$cc" -O2 -o "$work/trivial-$b" "$work/trivial.c" $(pkg-config --cflags --libs "$(pkg $b)")
	cp "$work/trivial-$b" "$work/trivial-$b.stripped"
	strip "$work/trivial-$b.stripped"
done
cp "$work/plain" "$work/plain.stripped"; strip "$work/plain.stripped"
echo "host_bytes plain=$(size "$work/plain") go=$(size "$work/trivial-go") runtime_free=$(size "$work/trivial-nogo")" \
	"stripped: plain=$(size "$work/plain.stripped") go=$(size "$work/trivial-go.stripped") runtime_free=$(size "$work/trivial-nogo.stripped")"

start_broker --log-level warn

for b in go nogo; do
	# shellcheck disable=SC2046
	"$cc" -O2 -o "$work/capibench-$b" bench/capi/capibench.c $(pkg-config --cflags --libs "$(pkg $b)") -pthread
done
echo "== Go archive, loading process (Go path)"
"$work/capibench-go" -n "$calls" -p "$pairs" "$sock"
echo "== Go archive, forked child (pure C path)"
"$work/capibench-go" -c -n "$calls" -p "$pairs" "$sock"
echo "== runtime-free build"
"$work/capibench-nogo" -n "$calls" -p "$pairs" "$sock"
