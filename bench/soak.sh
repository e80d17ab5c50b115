#!/usr/bin/env bash
# Soak: good clients (spload, with waiters parked) and hostile ones
# (loadtool hostile) against one daemon for a long while, sampling the
# daemon's descriptor count and RSS. Both must stay flat.
#
#   bench/soak.sh [-d SECONDS] [-i SAMPLE_SECONDS] [-s SHARED_BENCH_DIR]
set -euo pipefail

secs=600
every=30
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$top/../shared/bench}
while getopts "d:i:s:h" opt; do
	case $opt in
	d) secs=$OPTARG ;;
	i) every=$OPTARG ;;
	s) shared=$OPTARG ;;
	*) sed -n '2,7p' "$0"; exit 2 ;;
	esac
done

. "$top/bench/common.sh"
build_tools
start_broker --ctl-socket none --log-level warn --handshake-timeout 2s 2>"$work/broker.log"

fds() { ls "/proc/$bpid/fd" | wc -l; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$bpid/status"; }
echo "start: fds=$(fds) rss_kb=$(rss)"
base_fds=$(fds)

"$work/spload" -s "$sock" -t 1 -d "$secs" -w 500 -p "$bpid" >"$work/spload.out" &
spid=$!
"$work/loadtool" hostile -s "$sock" -d "${secs}s" -r 200 >"$work/hostile.out" &
hpid=$!

t=0
while kill -0 "$spid" 2>/dev/null; do
	sleep "$every"
	t=$((t + every))
	echo "t=${t}s fds=$(fds) rss_kb=$(rss)"
done
wait "$spid" || true
wait "$hpid" || true
sleep 3 # the handshake deadline closes the last silent clients
echo "end: fds=$(fds) (start $base_fds) rss_kb=$(rss)"
echo "spload: $(cat "$work/spload.out")"
cat "$work/hostile.out"
grep -E 'level=(WARN|ERROR)' "$work/broker.log" | head -5 || true
