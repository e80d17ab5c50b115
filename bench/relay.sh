#!/usr/bin/env bash
# Measures one-socketctl pair's relay beside a direct brokered pair,
# --handoff, socat and three yardstick relays (bench/relaybench): the
# round-trip latency of a 64-byte message carrying a descriptor, the
# throughput of a stream with and without descriptors, and the relay's
# memory and CPU. Prints one line per configuration and round, then the
# medians; doc/performance.md says what they mean.
#
#   bench/relay.sh [-r ROUNDS] [-n ROUND_TRIPS] [-b BYTES] [-o LOGFILE] [-- RELAYBENCH_FLAGS...]
#
# Configurations run interleaved, ROUNDS times each, as in run.sh.
set -euo pipefail

rounds=5
trips=20000
bytes=$((2 << 30))
top=$(cd "$(dirname "$0")/.." && pwd)
log=
while getopts "r:n:b:o:h" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	n) trips=$OPTARG ;;
	b) bytes=$OPTARG ;;
	o) log=$OPTARG ;;
	*) sed -n '2,10p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))

. "$top/bench/common.sh"
build_tools one-socket one-socketctl relaybench
start_broker --ctl-socket none --log-level warn 2>"$work/broker.log"

echo "commit $(git -C "$top" describe --always --dirty), $(nproc) CPUs, kernel $(uname -r)," \
	"load $(cut -d' ' -f1-3 /proc/loadavg), socat $(command -v socat || echo none)"
"$work/relaybench" run -s "$sock" -ctl "$work/one-socketctl" -dir "$work" \
	-r "$rounds" -n "$trips" -bytes "$bytes" ${log:+-o "$log"} "$@"
