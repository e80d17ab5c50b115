#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# nspawn.sh - One Socket under a real systemd: boots Debian 12 (systemd
# 252) in systemd-nspawn, a fresh container for each test, and runs one
# test of test/systemd in it: the package's Go test binary, started by a
# oneshot unit whose end ends the container with the test's status.
#
# Usage, as root: test/systemd/nspawn.sh [TEST...]
#
# The tests, all of them by default, in this order:
#   activation  the sockets listen from boot on; the first client starts
#               the service and pairs
#   status      systemctl status shows the daemon's STATUS= counters
#   restart     1,000 waiting clients pair after systemctl restart
#   kill        1,000 waiting clients pair after the daemon's SIGKILL and
#               Restart=on-failure (needs crash survival, issue 12)
#   stop        stopping the service, then the sockets, hangs up on the
#               waiting clients
#   policy      a broken --policy fails the start; at a reload it is
#               refused and the policy in force stays
#   journal     journalctl -p warning shows a policy denial (with the
#               peer and the key) and no info line: the daemon's syslog
#               priority prefixes reach journald
#   deb         the .deb: install enables the sockets, an upgrade loses
#               none of 1,000 waiting clients, purge leaves nothing
#   security    systemd-analyze security one-socket.service, online
#
# What a container holds: overlay layers over one root file system.
#   base   debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus
#          bookworm, made once and kept in $ONE_SOCKET_NSPAWN_CACHE
#          (/var/tmp/one-socket-nspawn), under a name that says what it
#          holds; $ONE_SOCKET_DEBIAN_MIRROR, if set, is the mirror
#   meson  meson install of this tree (prefix /usr, the units in
#          /lib/systemd/system as debian/rules puts them), its two socket
#          units enabled with systemctl enable (all tests but deb)
#   deb    the one-socket .deb that test/packaging/deb.sh built from this
#          very tree (common.sh's cache of them), built here if there is
#          none, and the same repacked with a higher version (deb)
#   test   the test binary, and test/systemd/security.sh if there is one
# The container's own writes go to a directory of its own, removed after.
#
# Exits 77 (skipped) when not root or a tool is missing, 1 when a test
# failed. Each test prints one line; a failed one prints its output, with
# the state and journal of the broker's units, and the end of the
# container's console; ONE_SOCKET_NSPAWN_VERBOSE=1 prints every test's
# output. ONE_SOCKET_NSPAWN_TIMEOUT (300) bounds each container, in
# seconds. The source is the working tree, as for deb.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../packaging/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../packaging/common.sh"
umask 022 # the layers' directories are the container's

all_tests=(activation status restart kill stop policy journal deb security)
declare -A go_test=(
	[activation]=TestActivation [status]=TestStatus [restart]=TestRestart
	[kill]=TestKill [stop]=TestStop [policy]=TestPolicy [journal]=TestJournal [deb]=TestDebian
	[security]=TestSecurity
)
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=("${all_tests[@]}")
for name in "${tests[@]}"; do
	if [ -z "${go_test[$name]:-}" ]; then
		echo "usage: $prog [TEST...]; the tests: ${all_tests[*]}" >&2
		exit 2
	fi
done

[ "$(id -u)" -eq 0 ] || skip "boots containers with systemd-nspawn, so it must run as root"
need systemd-nspawn systemd-container debootstrap debootstrap systemctl systemd \
	meson meson ninja ninja-build cc gcc git git \
	dpkg-buildpackage dpkg-dev dh debhelper dpkg-deb dpkg \
	timeout coreutils sha256sum coreutils flock util-linux findmnt util-linux
go=$(find_go) || skip "no Go toolchain (\$GO, go on PATH or /usr/local/go/bin/go)"
export GO=$go

boot_timeout=${ONE_SOCKET_NSPAWN_TIMEOUT:-300}
if ! [[ $boot_timeout =~ ^[0-9]+$ ]] || [ "$boot_timeout" -lt 120 ]; then
	fail "ONE_SOCKET_NSPAWN_TIMEOUT must be a number of seconds, 120 or more"
fi

suite=bookworm
include=systemd,systemd-sysv,dbus
arch=$(dpkg --print-architecture)
cache=${ONE_SOCKET_NSPAWN_CACHE:-/var/tmp/one-socket-nspawn}
# Change the recipe's number when the way the root file system is made
# changes, so that no run takes an old one for a new one.
key=$(printf '%s\n' "recipe 1" "debootstrap --variant=minbase --include=$include $suite" "$arch" |
	sha256sum | cut -c1-12)
rootfs=$cache/rootfs-$suite-$key

tmp=$(mktemp -d "${TMPDIR:-/tmp}/one-socket-nspawn.XXXXXX")
case $tmp in
*:*) rm -rf "$tmp"; fail "the temporary directory $tmp has a colon, which --overlay= cannot take" ;;
esac
container=      # the pid of the container's timeout and nspawn
cgroups=()      # the container's cgroups
partial_rootfs= # a root file system debootstrap is making

# remove_tree DIR: remove DIR, after what is mounted under it (debootstrap
# mounts /proc and /sys in its target, and a run cut short leaves them).
remove_tree() {
	local m
	[ -e "$1" ] || return 0
	findmnt --list --noheadings --output TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r |
		while IFS= read -r m; do umount --lazy -- "$m"; done
	rm -rf --one-file-system -- "$1"
}

# cgroup_dirs NAME: the cgroup NAME below this shell's own in each
# hierarchy systemd uses: the unified one (cgroup2) and, on a hybrid
# host, name=systemd. systemd-nspawn --keep-unit makes the container's
# cgroups ("payload" and "supervisor") in the one it runs in, so two
# containers in one cgroup would share them: each gets its own.
cgroup_dirs() {
	local line hier path mnt
	while IFS= read -r line; do
		hier=${line#*:}
		path=${hier#*:}
		hier=${hier%%:*}
		case $hier in
		'') mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts) ;;
		name=systemd) mnt=$(awk '$3 == "cgroup" && $4 ~ /(^|,)name=systemd(,|$)/ { print $2; exit }' /proc/mounts) ;;
		*) continue ;;
		esac
		if [ -n "$mnt" ]; then
			echo "$mnt${path%/}/$1"
		fi
	done </proc/self/cgroup
}

# kill_cgroups: kill what is left in the container's cgroups (nothing,
# unless its nspawn died: the container's systemd outlives it) and remove
# them.
kill_cgroups() {
	local d pids
	for d in "${cgroups[@]}"; do
		[ -d "$d" ] || continue
		for _ in $(seq 50); do
			pids=$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
			[ -n "$pids" ] || break
			if [ -e "$d/cgroup.kill" ]; then
				echo 1 >"$d/cgroup.kill"
			else
				# shellcheck disable=SC2086 # a list of pids
				kill -KILL $pids 2>/dev/null
			fi
			sleep 0.1
		done
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	cgroups=()
}

# stop_container: end the running container, if any. nspawn powers it off
# on SIGTERM (which timeout passes on); whatever is left after half a
# minute is killed.
stop_container() {
	if [ -n "$container" ]; then
		kill -TERM "$container" 2>/dev/null
		for _ in $(seq 300); do
			kill -0 "$container" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$container" 2>/dev/null
		wait "$container" 2>/dev/null
		container=
	fi
	kill_cgroups
}

cleanup() {
	local rc=$?
	set +e
	stop_container
	[ -z "$partial_rootfs" ] || remove_tree "$partial_rootfs"
	remove_tree "$tmp"
	exit $rc
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# make_rootfs: the base root file system, made once for every run (runs
# at the same time wait for the one that makes it).
make_rootfs() {
	local lock d
	private_dir "$cache" create
	exec {lock}>"$cache/lock"
	flock -w 900 "$lock" || fail "another run has held $cache/lock for 15 minutes"
	if [ -d "$rootfs" ]; then
		rootfs_from="the cached $rootfs"
	else
		for d in "$cache"/rootfs-*.new.*; do
			[ ! -e "$d" ] || remove_tree "$d" # left by a run that was killed
		done
		partial_rootfs=$rootfs.new.$$
		local start=$SECONDS
		# shellcheck disable=SC2086 # no mirror is no argument
		if ! debootstrap --variant=minbase --include="$include" "$suite" "$partial_rootfs" \
			${ONE_SOCKET_DEBIAN_MIRROR:-} >"$tmp/debootstrap.log" 2>&1; then
			tail -n 30 "$tmp/debootstrap.log" >&2
			fail "debootstrap failed (the end of its log is above)"
		fi
		rm -f "$partial_rootfs"/var/cache/apt/archives/*.deb
		mv -T -- "$partial_rootfs" "$rootfs"
		partial_rootfs=
		rootfs_from="debootstrap ($((SECONDS - start)) s), now cached in $rootfs"
	fi
	exec {lock}>&-
}

# same_links LAYER: the top-level links of the base in LAYER too (Debian
# 12's merged /usr: /lib is usr/lib, and so on), with their targets, so
# that an install into LAYER follows them as it would in the base, and
# LAYER hides none of them with a directory.
same_links() {
	local l
	for l in "$rootfs"/*; do
		if [ -L "$l" ]; then
			ln -s -- "$(readlink "$l")" "$1/${l##*/}"
			mkdir -p -- "$1/$(readlink "$l")"
		fi
	done
}

# make_test_layer: the test binary, static, so that it runs whatever the
# container's libc.
make_test_layer() {
	local dir=$test_layer/opt/nspawn-test
	mkdir -p "$dir"
	(cd "$root" && CGO_ENABLED=0 "$go" test -c -o "$dir/systemd.test" ./test/systemd) ||
		fail "go test -c ./test/systemd failed"
	if [ -f "$root/test/systemd/security.sh" ]; then
		install -m 0755 "$root/test/systemd/security.sh" "$dir/"
	fi
}

# make_meson_layer: meson install into the layer, and the sockets enabled.
make_meson_layer() {
	local log=$tmp/meson.log build=$tmp/meson-build u
	mkdir -p "$meson_layer"
	same_links "$meson_layer"
	{
		meson setup "$build" "$root" --prefix=/usr -Dsystemdsystemunitdir=/lib/systemd/system &&
			ninja -C "$build" &&
			meson install -C "$build" --no-rebuild --destdir "$meson_layer" &&
			systemctl --root="$meson_layer" enable one-socket.socket one-socket-control.socket
	} >"$log" 2>&1 || {
		tail -n 40 "$log" >&2
		fail "meson install into the container's layer failed (the end of its log is above)"
	}
	for u in one-socket.service one-socket.socket one-socket-control.socket; do
		[ -f "$meson_layer/usr/lib/systemd/system/$u" ] || fail "meson install put no $u in /lib/systemd/system"
	done
	for u in "$rootfs"/*; do
		if [ -L "$u" ] && [ ! -L "$meson_layer/${u##*/}" ]; then
			fail "meson install made /${u##*/} a directory, which would hide the base's link"
		fi
	done
}

# make_deb_layer: the one-socket .deb of this tree, from the cache that
# deb.sh fills or built here, and the same with a higher version.
make_deb_layer() {
	local src=$tmp/build/one-socket-$version dir tree deb newer
	local deb_version name
	deb_version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$root/debian/changelog")
	name=one-socket_${deb_version}_$arch.deb
	export_tree "$src"
	tree=$(tree_key "$src")
	if dir=$(cached_debs "$tree") && [ -f "$dir/$name" ]; then
		debs_from="deb.sh's, in $dir"
	else
		local start=$SECONDS
		build_debs "$src" "$tmp/build.log"
		cache_debs "$tree" "$tmp/build/"*.deb
		dir=$tmp/build
		debs_from="dpkg-buildpackage ($((SECONDS - start)) s)"
	fi
	deb=$deb_layer/opt/nspawn-test/debs/one-socket.deb
	newer=${deb%.deb}-newer.deb
	mkdir -p "${deb%/*}"
	cp -- "$dir/$name" "$deb"
	# The upgrade's package: the same, but for its version.
	dpkg-deb --raw-extract "$deb" "$tmp/repack"
	sed -i "s/^Version: .*/Version: $deb_version+nspawn1/" "$tmp/repack/DEBIAN/control"
	dpkg-deb --root-owner-group --build "$tmp/repack" "$newer" >/dev/null
	rm -rf "$tmp/repack"
	dpkg --compare-versions "$(dpkg-deb --field "$newer" Version)" gt "$deb_version" ||
		fail "the repacked .deb's version is not higher than $deb_version"
}

# unit TEST: the unit that runs the Go test TEST and ends the container
# with its status.
unit() {
	cat <<EOF
[Unit]
Description=One Socket under systemd: $1 (test/systemd/nspawn.sh)
After=multi-user.target
SuccessAction=exit-force
FailureAction=exit-force

[Service]
Type=oneshot
Environment=ONE_SOCKET_IN_NSPAWN=1
ExecStart=/opt/nspawn-test/systemd.test -test.run=^$1\$\$ -test.count=1 -test.v -test.timeout=$((boot_timeout - 60))s
StandardOutput=file:/var/log/nspawn-test.log
StandardError=inherit
# A thousand clients and their partners, with a descriptor each.
LimitNOFILE=16384
TimeoutStartSec=$((boot_timeout - 30))s

[Install]
WantedBy=multi-user.target
EOF
}

# boot NAME LAYER...: boot the base with the LAYERs over it, the last on
# top, and the unit that runs test NAME enabled in a directory of the
# test's own, which takes the container's writes. Returns the container's
# exit status: the test's.
boot() {
	local name=$1 dir=$tmp/$1 lower=$rootfs layer rc=0
	shift
	for layer in "$@"; do
		lower+=:$layer
	done
	local etc=$dir/upper/etc/systemd/system
	mkdir -p "$etc/multi-user.target.wants"
	unit "${go_test[$name]}" >"$etc/nspawn-test.service"
	ln -s ../nspawn-test.service "$etc/multi-user.target.wants/"
	mapfile -t cgroups < <(cgroup_dirs "one-socket-nspawn.$$.$name")
	[ ${#cgroups[@]} -eq 0 ] || mkdir -p -- "${cgroups[@]}"
	(
		for d in "${cgroups[@]}"; do
			echo "$BASHPID" >"$d/cgroup.procs"
		done
		exec timeout "$boot_timeout" systemd-nspawn --quiet --directory="$rootfs" --boot \
			--machine="one-socket-test-$$-$name" --register=no --keep-unit \
			--private-users=no --private-network --console=read-only \
			--overlay="$lower:$dir/upper:/"
	) </dev/null >"$dir/console" 2>&1 &
	container=$!
	wait "$container" || rc=$?
	container=
	kill_cgroups
	return "$rc"
}

# run_test NAME LAYER...: boot, and say how the test went.
run_test() {
	local name=$1 start=$SECONDS rc=0 log extra=
	boot "$@" || rc=$?
	log=$tmp/$name/upper/var/log/nspawn-test.log
	if [ "$rc" -eq 0 ] && [ -f "$log" ] && grep -qx PASS "$log" &&
		grep -q -- "^--- PASS: ${go_test[$name]} " "$log"; then
		if [ "$name" = security ]; then
			extra=$(sed -n 's/.*Overall exposure level for \(.*\)/, \1/p' "$log" | head -n 1)
		fi
		echo "$prog: ok   $name ($((SECONDS - start)) s$extra)"
		[ "${ONE_SOCKET_NSPAWN_VERBOSE:-0}" != 1 ] || sed 's/^/    /' "$log"
		rm -rf "${tmp:?}/$name"
		return 0
	fi
	local why="the container's status $rc"
	[ "$rc" -ne 124 ] || why="killed after $boot_timeout s"
	echo "$prog: FAIL $name ($((SECONDS - start)) s, $why); the test's output:"
	if [ -f "$log" ]; then
		head -n 400 "$log" | sed 's/^/    /'
	else
		echo "    (none)"
	fi
	echo "  the end of the container's console:"
	tail -n 20 "$tmp/$name/console" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'
	rm -rf "${tmp:?}/$name"
	return 1
}

version=$(meson_version)
test_layer=$tmp/layer-test
meson_layer=$tmp/layer-meson
deb_layer=$tmp/layer-deb
rootfs_from=
debs_from=
start=$SECONDS
make_rootfs
make_test_layer
want_meson=false want_deb=false
for name in "${tests[@]}"; do
	case $name in
	deb) want_deb=true ;;
	*) want_meson=true ;;
	esac
done
! $want_meson || make_meson_layer
! $want_deb || make_deb_layer
echo "$prog: prepared in $((SECONDS - start)) s; the root file system from $rootfs_from${debs_from:+; the .debs from $debs_from}"

failed=()
for name in "${tests[@]}"; do
	case $name in
	deb) layers=("$deb_layer" "$test_layer") ;;
	*) layers=("$meson_layer" "$test_layer") ;;
	esac
	run_test "$name" "${layers[@]}" || failed+=("$name")
done
[ ${#failed[@]} -eq 0 ] || fail "${#failed[@]} of ${#tests[@]} failed: ${failed[*]}"
echo "$prog: ok: ${#tests[@]} tests under a booted Debian $suite"
