#!/usr/bin/env bash
# Restart under load: 1,000 waiting clients and spload pairing without
# pause, while the daemon is upgraded in place by SIGUSR2 ten times. Not
# one pairing may fail, and every waiting client must pair afterwards.
#
#   bench/upgrade.sh [-w WAITERS] [-u UPGRADES] [-s SHARED_BENCH_DIR]
set -euo pipefail

waiters=1000
upgrades=10
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$top/../shared/bench}
while getopts "w:u:s:h" opt; do
	case $opt in
	w) waiters=$OPTARG ;;
	u) upgrades=$OPTARG ;;
	s) shared=$OPTARG ;;
	*) sed -n '2,7p' "$0"; exit 2 ;;
	esac
done

. "$top/bench/common.sh"
build_tools
log=$work/broker.log
start_broker --ctl-socket "$work/ctl" --log-file "$log"

mkfifo "$work/hold"
"$work/loadtool" waiters -s "$sock" -n "$waiters" <"$work/hold" >"$work/waiters.out" &
wpid=$!
exec 9>"$work/hold"
for _ in $(seq 200); do grep -q parked "$work/waiters.out" 2>/dev/null && break; sleep 0.05; done

secs=$((upgrades * 2 + 6))
"$work/spload" -s "$sock" -t 2 -d "$secs" -p "$bpid" >"$work/spload.out" &
spid=$!
sleep 2
for i in $(seq "$upgrades"); do
	kill -USR2 "$bpid"
	for _ in $(seq 200); do
		[ "$(grep -c 'msg=upgraded' "$log")" -ge "$i" ] && break
		sleep 0.05
	done
	[ "$(grep -c 'msg=upgraded' "$log")" -ge "$i" ] || { echo "upgrade $i did not complete" >&2; exit 1; }
	sleep 1.5
done
wait "$spid" || true
exec 9>&-
wait "$wpid" || true

echo "upgrades=$(grep -c 'msg=upgraded' "$log") pid_unchanged=$(kill -0 "$bpid" && echo yes)"
echo "spload: $(cat "$work/spload.out")"
cat "$work/waiters.out" | grep -v parked
grep -E 'level=(WARN|ERROR)' "$log" || true
