#!/usr/bin/env bash
# The cost of metrics: spload -t 2 against a daemon without metrics, and
# against one serving --metrics-listen on a loopback port that is scraped
# once a second, in alternating rounds of one run (so that the machine's
# drift falls on both alike). Prints each round, then the medians and the
# difference in pairs per second and in pairs per broker CPU-second.
#
#   bench/metrics.sh [-r ROUNDS] [-d SECONDS] [-s SHARED_BENCH_DIR]
set -euo pipefail

rounds=5
secs=8
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$top/../shared/bench}
while getopts "r:d:s:h" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	d) secs=$OPTARG ;;
	s) shared=$OPTARG ;;
	*) sed -n '2,7p' "$0"; exit 2 ;;
	esac
done

. "$top/bench/common.sh"
build_tools
port=$((20000 + RANDOM % 20000))
spid=
stop_scraper() {
	if [ -n "$spid" ]; then
		kill "$spid" 2>/dev/null || true
		wait "$spid" 2>/dev/null || true
		spid=
	fi
}

# one LABEL ARGS...: a round of spload against a daemon started with ARGS;
# with metrics, a scraper fetches /metrics once a second meanwhile.
one() {
	local label=$1
	shift
	start_broker --log-file "$work/broker.log" "$@"
	if [ "$label" = metrics ]; then
		# Bounded: one scrape a second, for the round's length and a little.
		(for _ in $(seq $((secs + 2))); do
			curl -sf -o /dev/null "http://127.0.0.1:$port/metrics" || true
			sleep 1
		done) &
		spid=$!
	fi
	out=$("$work/spload" -s "$sock" -t 2 -d "$secs" -p "$bpid")
	stop_scraper
	if [ "$label" = metrics ]; then
		n=$(curl -sf "http://127.0.0.1:$port/metrics" | grep -c '^one_socket_' || true)
		[ "$n" -gt 0 ] || { echo "no metrics served" >&2; exit 1; }
	fi
	stop_broker
	echo "$label $out"
}

for i in $(seq "$rounds"); do
	if [ $((i % 2)) -eq 1 ]; then
		one plain; one metrics --metrics-listen "127.0.0.1:$port"
	else
		one metrics --metrics-listen "127.0.0.1:$port"; one plain
	fi
done | tee "$work/rounds"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { grep "^$1 " "$work/rounds" | grep -o "$2=[0-9.]*" | cut -d= -f2 | median; }
for f in pairs/s pairs_per_broker_cpu_s; do
	a=$(field plain "$f")
	b=$(field metrics "$f")
	awk -v f="$f" -v a="$a" -v b="$b" 'BEGIN {printf "%s: without %.0f, with %.0f, %+.2f%%\n", f, a, b, (b-a)/a*100}'
done
