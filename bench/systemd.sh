#!/usr/bin/env bash
# Crash survival under a real systemd: the shipped units booted in
# systemd-nspawn (Debian 12, systemd 252), as the test suite boots them.
# In one boot it measures
#   - spload -t 2 through the socket unit, with and without --fdstore
#     (each waiting client kept in systemd's store), with none and with
#     -w clients parked, and systemd's own CPU time beside the daemon's;
#   - loadtool survive: N waiters, "systemctl kill -s KILL one-socket",
#     and the time until every one of them has paired again, for each N.
#
#   bench/systemd.sh [-r ROOTFS] [-d SECS] [-w WAITERS] [-n "N..."] [-s SHARED_BENCH_DIR]
#
# Needs root, systemd-nspawn (systemd-container) and debootstrap. ROOTFS
# (default /var/tmp/one-socket-bench-rootfs) is built once, about 35 s,
# and reused; each run boots a copy.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$top/../shared/bench}
rootfs=/var/tmp/one-socket-bench-rootfs
secs=10
parked=1000
sizes="1000 10000"
while getopts "r:d:w:n:s:h" opt; do
	case $opt in
	r) rootfs=$OPTARG ;;
	d) secs=$OPTARG ;;
	w) parked=$OPTARG ;;
	n) sizes=$OPTARG ;;
	s) shared=$OPTARG ;;
	*) sed -n '2,16p' "$0"; exit 2 ;;
	esac
done
for tool in systemd-nspawn debootstrap; do
	command -v "$tool" >/dev/null || { echo "systemd.sh: needs $tool (apt-get install systemd-container debootstrap)" >&2; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "systemd.sh: needs root" >&2; exit 77; }

if [ ! -x "$rootfs/lib/systemd/systemd" ]; then
	echo "systemd.sh: building $rootfs (once)" >&2
	rm -rf "$rootfs.new"
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$rootfs.new" >/dev/null
	mv "$rootfs.new" "$rootfs"
fi
. "$top/bench/common.sh"
# The booted copy is large: it goes to /var/tmp, not to $work.
boot=$(mktemp -d /var/tmp/one-socket-bench.XXXXXX)
trap 'rm -rf "$boot"; bench_cleanup' EXIT
root=$boot/root
cp -a "$rootfs" "$root"

# The daemon and the load tools as bench/common.sh builds them, the Go
# ones static (the container's C library is not the host's), and the units.
# In a subshell, which keeps its descriptor limit to itself: the
# container starts with the limit it always had.
(CGO_ENABLED=0 build_tools)
cp "$work/one-socket" "$root/usr/bin/"
cp "$work/spload" "$work/loadtool" "$root/usr/local/bin/"
units=$root/etc/systemd/system
sed 's|@bindir@|/usr/bin|g' "$top/systemd/one-socket.service.in" >"$units/one-socket.service"
cp "$top/systemd/one-socket.socket" "$top/systemd/one-socket-control.socket" "$units/"
cat >"$units/bench.service" <<'EOF'
[Unit]
Description=One Socket crash-survival bench
After=multi-user.target one-socket.socket
SuccessAction=exit-force
FailureAction=exit-force
[Service]
Type=oneshot
ExecStart=/usr/local/bin/bench-inside
StandardOutput=journal+console
StandardError=journal+console
LimitNOFILE=1048576
[Install]
WantedBy=multi-user.target
EOF
cat >"$root/usr/local/bin/bench-inside" <<EOF
#!/bin/bash
set -euo pipefail
secs=$secs parked=$parked sizes="$sizes"
EOF
cat >>"$root/usr/local/bin/bench-inside" <<'EOF'
cpu1() { awk '{print $14 + $15}' /proc/1/stat; } # systemd's ticks
with_args() {
	mkdir -p /run/systemd/system/one-socket.service.d
	printf '[Service]\nExecStart=\nExecStart=/usr/bin/one-socket %s\n' "$1" >/run/systemd/system/one-socket.service.d/bench.conf
	systemctl daemon-reload
	systemctl restart one-socket.service
}
for store in --fdstore ""; do
	with_args "$store"
	for w in 0 "$parked"; do
		pid=$(systemctl show -p MainPID --value one-socket)
		c0=$(cpu1)
		out=$(spload -s /run/one.socket -t 2 -d "$secs" -w "$w" -p "$pid")
		echo "BENCH spload args=${store:-none} waiting=$w $out systemd_cpu_s=$(( $(cpu1) - c0 ))e-2"
	done
done
with_args --fdstore
for n in $sizes; do
	systemctl reset-failed one-socket.service || true
	echo "BENCH survive $(loadtool survive -s /run/one.socket -c /run/one-socket.ctl -n "$n" -kill 'systemctl kill -s KILL one-socket')"
	systemctl is-active one-socket.service >/dev/null
done
EOF
chmod +x "$root/usr/local/bin/bench-inside"
systemctl --root="$root" enable one-socket.socket one-socket-control.socket bench.service >/dev/null 2>&1

timeout 900 systemd-nspawn -q -D "$root" -b --register=no --keep-unit --private-users=no \
	--console=read-only </dev/null >"$boot/console" 2>&1 || {
	echo "systemd.sh: the boot failed" >&2
	tail -40 "$boot/console" >&2
	exit 1
}
grep -a 'BENCH' "$boot/console" | sed 's/^.*BENCH /  /'
