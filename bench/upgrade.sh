#!/usr/bin/env bash
# Restart under load: 1,000 waiting clients and spload pairing without
# pause, while the daemon restarts ten times: upgraded in place by SIGUSR2
# (-m usr2, the default), or stopped and started again the way systemctl
# restart does it with the shipped units, the file descriptor store
# included (-m systemd; loadtool plays systemd's part). Not one pairing
# may fail, and every waiting client must pair afterwards. With -m crash
# the daemon is killed by SIGKILL instead and started again at once, as
# Restart=on-failure would: the pairings in flight at each kill fail
# (spload counts them as errors), and every waiting client must still
# pair afterwards.
#
#   bench/upgrade.sh [-m usr2|systemd|crash] [-w WAITERS] [-u RESTARTS] [-s SHARED_BENCH_DIR]
set -euo pipefail

mode=usr2
waiters=1000
upgrades=10
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$top/../shared/bench}
while getopts "m:w:u:s:h" opt; do
	case $opt in
	m) mode=$OPTARG ;;
	w) waiters=$OPTARG ;;
	u) upgrades=$OPTARG ;;
	s) shared=$OPTARG ;;
	*) sed -n '2,10p' "$0"; exit 2 ;;
	esac
done
case $mode in
usr2 | systemd | crash) ;;
*) echo "-m usr2, -m systemd or -m crash, not $mode" >&2; exit 2 ;;
esac

. "$top/bench/common.sh"
build_tools
log=$work/broker.log
secs=$((upgrades * 2 + 6))
if [ "$mode" = usr2 ]; then
	start_broker --ctl-socket "$work/ctl" --log-file "$log"
	cpu=(-p "$bpid")
else
	mkfifo "$work/mhold"
	kill_flag=()
	[ "$mode" = crash ] && kill_flag=(-k)
	"$work/loadtool" manager -D "$work" -b "$work/one-socket" -n "$upgrades" -i 2s "${kill_flag[@]}" \
		-- --fdstore --log-file "$log" <"$work/mhold" >"$work/manager.out" &
	mpid=$!
	exec 8>"$work/mhold"
	for _ in $(seq 200); do grep -q ready "$work/manager.out" 2>/dev/null && break; sleep 0.05; done
	grep -q ready "$work/manager.out" || { echo "the manager did not start the broker" >&2; exit 1; }
	sock=$work/one.socket
	cpu=() # a new pid at each restart
fi

mkfifo "$work/hold"
"$work/loadtool" waiters -s "$sock" -n "$waiters" <"$work/hold" >"$work/waiters.out" &
wpid=$!
exec 9>"$work/hold"
for _ in $(seq 200); do grep -q parked "$work/waiters.out" 2>/dev/null && break; sleep 0.05; done

"$work/spload" -s "$sock" -t 2 -d "$secs" "${cpu[@]}" >"$work/spload.out" &
spid=$!
sleep 2
if [ "$mode" = usr2 ]; then
	for i in $(seq "$upgrades"); do
		kill -USR2 "$bpid"
		for _ in $(seq 200); do
			[ "$(grep -c 'msg=upgraded' "$log")" -ge "$i" ] && break
			sleep 0.05
		done
		[ "$(grep -c 'msg=upgraded' "$log")" -ge "$i" ] || { echo "upgrade $i did not complete" >&2; exit 1; }
		sleep 1.5
	done
else
	echo go >&8
	for _ in $(seq $((secs * 20))); do grep -q '^restarts=' "$work/manager.out" && break; sleep 0.05; done
fi
wait "$spid" || true
exec 9>&-
wait "$wpid" || true

if [ "$mode" = usr2 ]; then
	echo "upgrades=$(grep -c 'msg=upgraded' "$log") pid_unchanged=$(kill -0 "$bpid" && echo yes)"
else
	exec 8>&-
	wait "$mpid" || true
	grep '^restarts=' "$work/manager.out" || { echo "the restarts did not complete:" >&2; cat "$work/manager.out" >&2; }
	echo "down_ms: $(grep -o 'down_ms=[0-9.]*' "$work/manager.out" | cut -d= -f2 | tr '\n' ' ')"
	echo "taken back: $(grep -o 'clients taken back.*' "$log" | sed -E 's/.* (clients=[0-9]+ stored=[0-9]+ kept=[0-9]+ hung_up=[0-9]+).*/\1/' | sort | uniq -c | tr '\n' ';')"
fi
echo "spload: $(cat "$work/spload.out")"
grep -v parked "$work/waiters.out"
grep -E 'level=(WARN|ERROR)' "$log" || true
