#!/usr/bin/env bash
# Measures the broker with the shared load tools (spload, floor): pairs per
# broker CPU-second, latency, lookup cost with many waiting clients, and
# memory per waiting client. Prints one median line per configuration.
#
#   bench/run.sh [-r ROUNDS] [-d SECONDS] [-s SHARED_BENCH_DIR] [-o LOGFILE]
#
# Configurations run interleaved, ROUNDS times each, so that a noisy moment on
# a shared machine spreads over all of them instead of spoiling one.
set -euo pipefail

rounds=3
secs=8
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$top/../shared/bench}
log=
while getopts "r:d:s:o:h" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	d) secs=$OPTARG ;;
	s) shared=$OPTARG ;;
	o) log=$OPTARG ;;
	*) sed -n '2,9p' "$0"; exit 2 ;;
	esac
done

. "$top/bench/common.sh"
log=${log:-$work/raw.log}
build_tools
"${CC:-cc}" -O2 -Wall -Wextra -pthread -o "$work/floor" "$shared/floor.c"

configs=(
	"floor -e"
	"-t 1"
	"-t 2"
	"-t 4"
	"-t 2 -w 18000 -k 32"
	"-t 2 -k 1024"
	"-t 2 -w 18000 -k 1024"
)

: >"$log"
for r in $(seq "$rounds"); do
	for c in "${configs[@]}"; do
		if [ "$c" = "floor -e" ]; then
			line=$("$work/floor" -d "$secs" -e -s "$work/floor.sock")
			echo "floor -e | $line" | tee -a "$log"
			continue
		fi
		start_broker --log-level warn 2>>"$work/broker.log"
		# shellcheck disable=SC2086
		line=$("$work/spload" -s "$sock" -d "$secs" -p "$bpid" $c) || true
		stop_broker
		echo "$c | $line" | tee -a "$log"
	done
	for k in 32 1024; do
		start_broker --log-level warn 2>>"$work/broker.log"
		line=$("$work/spload" -m rss -s "$sock" -p "$bpid" -w 18000 -k "$k")
		stop_broker
		echo "rss -k $k | $line" | tee -a "$log"
	done
done

echo
echo "medians over $rounds rounds of ${secs}s (raw lines: $log)"
awk -F' [|] ' '
function field(s, name,   m) {
	if (match(s, name "=[0-9.]+")) { m = substr(s, RSTART, RLENGTH); sub(/.*=/, "", m); return m + 0 }
	return -1
}
function median(key,   n, i, j, t, a) {
	n = split(vals[key], a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
	c = $1
	if (!(c in seen)) { seen[c] = 1; order[++nc] = c }
	if (c ~ /^floor/) { add(c, "cpu", field($2, "broker_pairs_per_cpu_s")) }
	else if (c ~ /^rss/) { add(c, "bytes", field($2, "bytes_per_waiting")) }
	else {
		add(c, "cpu", field($2, "pairs_per_broker_cpu_s")); add(c, "p50", field($2, "p50_us"))
		add(c, "p99", field($2, "p99_us")); add(c, "wall", field($2, "pairs/s"))
		add(c, "err", field($2, "errors"))
	}
}
function add(c, k, v) { vals[c SUBSEP k] = vals[c SUBSEP k] " " v; keys[c SUBSEP k] = 1 }
END {
	for (i = 1; i <= nc; i++) {
		c = order[i]
		if (c ~ /^floor/) printf "%-24s broker_pairs_per_cpu_s=%d\n", c, median(c SUBSEP "cpu")
		else if (c ~ /^rss/) printf "%-24s bytes_per_waiting=%d\n", c, median(c SUBSEP "bytes")
		else printf "%-24s pairs_per_broker_cpu_s=%d wall_pairs_s=%d p50_us=%.1f p99_us=%.1f errors=%d\n", c,
			median(c SUBSEP "cpu"), median(c SUBSEP "wall"), median(c SUBSEP "p50"), median(c SUBSEP "p99"), median(c SUBSEP "err")
	}
}' "$log"
