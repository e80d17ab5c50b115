#!/bin/busybox sh
# /init of the test guest. It loads the modules listed in /modules, in
# order, does the job that the kernel command line names (hosts.job=JOB),
# prints what it found as lines beginning "HOSTS " on the serial console
# for the test to read, and powers off.
#
# Parameters (kernel command line):
#   hosts.job=hello|blk|net|fs
#   hosts.off=O1,O2,...  hosts.len=N   blk: print N bytes of /dev/vda at each offset, in hex
#   hosts.ip=A/P hosts.peer=A hosts.count=N   net: send N pings to the peer
#   hosts.tag=T hosts.file=F   fs: mount virtiofs tag T, print file F in hex

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /mnt
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "HOSTS $*"; }
fail() {
	say "error $*"
	finish
}
finish() {
	say done
	poweroff -f
	sleep 10
}

for m in $(cat /modules); do
	insmod "/lib/modules/$m.ko" || say "error insmod $m"
done

# The parameters, as shell variables: hosts.off=0,1 becomes off="0 1".
for w in $(cat /proc/cmdline); do
	case $w in
	hosts.*=*)
		k=${w%%=*}
		v=$(echo "${w#*=}" | tr , ' ')
		eval "${k#hosts.}=\$v"
		;;
	esac
done

# waitfor TENTHS COMMAND...: retry COMMAND for up to TENTHS tenths of a second.
waitfor() {
	n=$1
	shift
	until "$@"; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		usleep 100000
	done
}

linkup() {
	[ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] &&
		[ "$(cat /sys/class/net/eth0/operstate 2>/dev/null)" = up ]
}

case ${job:-} in
hello)
	say "hello $(uname -r)"
	;;
blk)
	waitfor 100 test -b /dev/vda || fail "no /dev/vda"
	for o in $off; do
		say "blk $o $(xxd -p -s "$o" -l "$len" /dev/vda | tr -d '\n')"
	done
	;;
net)
	waitfor 100 test -e /sys/class/net/eth0 || fail "no eth0"
	ip link set eth0 up
	waitfor 200 linkup
	say "link operstate=$(cat /sys/class/net/eth0/operstate) carrier=$(cat /sys/class/net/eth0/carrier)"
	ip addr add "$ip" dev eth0
	# A fixed neighbour: the pings go out at once, with no ARP first.
	arp -s "$peer" 02:00:00:00:00:02
	ping -q -c "$count" -i 0.1 -W 1 "$peer" >/dev/null
	s=/sys/class/net/eth0/statistics
	say "stats tx=$(cat $s/tx_packets) rx=$(cat $s/rx_packets)"
	;;
fs)
	mount -t virtiofs "$tag" /mnt || fail "mount -t virtiofs $tag"
	say "fs $(xxd -p "/mnt/$file" | tr -d '\n')"
	umount /mnt
	;;
*)
	fail "unknown job '${job:-}'"
	;;
esac
finish
