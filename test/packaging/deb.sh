#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# deb.sh - build the Debian packages and prove them: build with
# dpkg-buildpackage in a copy of the tree, lintian without errors, the
# exact file list of each package, then install both and use them: the
# installed daemon pairs two one-socketctl clients, and a C program built
# against the installed headers, once with spbroker.pc (the Go archive)
# and once with spbroker-c.pc (the runtime-free one), pairs through it. Both
# packages are purged at the end, also after a failure. The .debs are
# kept in common.sh's cache ($ONE_SOCKET_DEB_CACHE, /var/tmp/one-socket-debs)
# for test/systemd/nspawn.sh, which tests their maintainer scripts under
# systemd.
#
# Run as root from anywhere: test/packaging/deb.sh. Exits 77 (skipped)
# when not root or a tool is missing, 1 on a failure. The source is what
# git tracks, as it is in the working tree; ONE_SOCKET_PKG_SOURCE=HEAD
# takes the last commit instead. Go and the module proxy as for any build
# (doc/packaging.md); the build's Go caches are fresh, in the temporary
# directory.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ "$(id -u)" -eq 0 ] || skip "installs packages with dpkg -i, so it must run as root"
need git git dpkg-buildpackage dpkg-dev dh debhelper lintian lintian \
	meson meson ninja ninja-build pkg-config pkg-config cc gcc \
	dpkg-deb dpkg timeout coreutils nm binutils
find_go >/dev/null || skip "no Go toolchain (\$GO, go on PATH or /usr/local/go/bin/go)"

packages=(one-socket libspbroker-dev)
for p in "${packages[@]}"; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$'; then
		fail "$p is installed already; this test installs and purges it, so remove it first (dpkg --purge $p)"
	fi
done

"$root/test/packaging/versions.sh"
version=$(meson_version)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb_version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$root/debian/changelog")

# wait_gone PID: wait (at most 20 s) for a process that is not our child
# (the daemon detached) to end.
wait_gone() {
	local i
	for i in $(seq 200); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# dpkg_locked ARGS...: dpkg, waiting while another dpkg or apt holds the
# lock (others may be installing packages on this machine).
dpkg_locked() {
	local i out
	for i in $(seq 120); do
		if out=$(dpkg "$@" 2>&1); then
			printf '%s\n' "$out"
			return 0
		fi
		case $out in
		*"lock"*) sleep 1 ;;
		*) printf '%s\n' "$out" >&2; return 1 ;;
		esac
	done
	printf '%s\n' "$out" >&2
	return 1
}

# same_list WHAT EXPECTED ACTUAL: compare two sorted lists.
same_list() {
	if ! diff -u <(printf '%s\n' "$2" | LC_ALL=C sort) <(printf '%s\n' "$3" | LC_ALL=C sort) >"$tmp/diff"; then
		echo "$prog: $1 differs from what is expected (- expected, + actual):" >&2
		cat "$tmp/diff" >&2
		fail "$1"
	fi
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/one-socket-deb.XXXXXX")
installed=false
daemon_pid=
cleanup() {
	local rc=$?
	set +e
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill "$daemon_pid"
		wait_gone "$daemon_pid"
	fi
	if $installed; then
		for p in "${packages[@]}"; do
			if dpkg-query -W "$p" >/dev/null 2>&1; then
				dpkg_locked --purge "$p" >/dev/null
			fi
		done
	fi
	rm -rf "$tmp"
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

echo "$prog: building the packages (dpkg-buildpackage -us -uc -b)"
src=$tmp/build/one-socket-$version
export_tree "$src"
key=$(tree_key "$src")
start=$SECONDS
build_debs "$src" "$tmp/build.log"
echo "$prog: built in $((SECONDS - start)) s"
grep -q '^debian/rules: building with go version' "$tmp/build.log" ||
	fail "the build log does not say which Go it used"

# Exactly the two packages, nothing more (no -dbgsym either).
(cd "$tmp/build" && ls -1 -- *.deb) >"$tmp/debs"
same_list "the list of .deb files" \
	"one-socket_${deb_version}_$arch.deb
libspbroker-dev_${deb_version}_$arch.deb" "$(cat "$tmp/debs")"
deb_daemon=$tmp/build/one-socket_${deb_version}_$arch.deb
deb_dev=$tmp/build/libspbroker-dev_${deb_version}_$arch.deb
changes=$tmp/build/one-socket_${deb_version}_$arch.changes

for f in "$deb_daemon" "$deb_dev"; do
	fields=$(dpkg-deb -f "$f" Package Version Architecture Source)
	case $f in
	"$deb_daemon") name=one-socket ;;
	*) name=libspbroker-dev ;;
	esac
	# Source: is omitted when it equals Package.
	want="Package: $name
Version: $deb_version
Architecture: $arch"
	[ $name = one-socket ] || want="$want
Source: one-socket"
	same_list "the control fields of $name" "$want" "$fields"
	[ "${deb_version%-*}" = "$version" ] || fail "package version $deb_version is not meson's $version"
done

echo "$prog: lintian"
lintian_rc=0
lintian --fail-on error "$changes" >"$tmp/lintian" 2>&1 || lintian_rc=$?
grep -v '^running with root privileges' "$tmp/lintian" || true
if [ $lintian_rc -ne 0 ] || grep -q '^E: ' "$tmp/lintian"; then
	fail "lintian reports errors (status $lintian_rc)"
fi

# file_list DEB: the paths of the files and links in DEB, without "./".
file_list() {
	dpkg-deb -c "$1" | awk '$1 !~ /^d/ { print substr($6, 2) }'
}

same_list "the files of one-socket" "\
/lib/systemd/system/one-socket-control.socket
/lib/systemd/system/one-socket.service
/lib/systemd/system/one-socket.socket
/usr/bin/one-socket
/usr/bin/one-socketctl
/usr/share/doc/one-socket/README.md.gz
/usr/share/doc/one-socket/changelog.Debian.gz
/usr/share/doc/one-socket/copyright
/usr/share/doc/one-socket/one-socket.md.gz
/usr/share/doc/one-socket/one-socketctl.md.gz
/usr/share/doc/one-socket/security.md.gz
/usr/share/lintian/overrides/one-socket
/usr/share/man/man8/one-socket.8.gz
/usr/share/man/man8/one-socketctl.8.gz" "$(file_list "$deb_daemon")"

same_list "the files of libspbroker-dev" "\
/usr/include/socketpair-broker/helper.h
/usr/include/socketpair-broker/proto.h
/usr/lib/$multiarch/libspbroker-c.a
/usr/lib/$multiarch/libspbroker.a
/usr/lib/$multiarch/pkgconfig/spbroker-c.pc
/usr/lib/$multiarch/pkgconfig/spbroker.pc
/usr/share/doc/libspbroker-dev/c-library.md.gz
/usr/share/doc/libspbroker-dev/changelog.Debian.gz
/usr/share/doc/libspbroker-dev/copyright
/usr/share/doc/libspbroker-dev/examples/echo.c
/usr/share/lintian/overrides/libspbroker-dev
/usr/share/man/man3/libspbroker.3.gz" "$(file_list "$deb_dev")"

# The commands are executable, everything else is not.
modes=$( { dpkg-deb -c "$deb_daemon"; dpkg-deb -c "$deb_dev"; } | awk '$1 !~ /^d/ && $1 ~ /x/ { print substr($6, 2) }')
same_list "the executable files" "/usr/bin/one-socket
/usr/bin/one-socketctl" "$modes"

# Kept for test/systemd/nspawn.sh, which installs them under systemd.
cache_debs "$key" "$deb_daemon" "$deb_dev"

echo "$prog: installing both packages (dpkg -i)"
installed=true
dpkg_locked -i "$deb_daemon" "$deb_dev" >"$tmp/dpkg-i.log" ||
	fail "dpkg -i failed"
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status} ${Version}\n' "$p" | grep -qx "install ok installed $deb_version" ||
		fail "$p is not installed at $deb_version after dpkg -i"
done

# The sockets are enabled on install (the symlinks deb-systemd-helper
# makes even where systemd is not running); the service is not.
wants=/etc/systemd/system/sockets.target.wants
for u in one-socket.socket one-socket-control.socket; do
	[ "$(readlink "$wants/$u")" = "/lib/systemd/system/$u" ] ||
		fail "$u is not enabled after install ($wants/$u)"
done
if ls /etc/systemd/system/*.wants/one-socket.service >/dev/null 2>&1; then
	fail "one-socket.service was enabled on install; only its sockets should be"
fi

out=$(/usr/bin/one-socket --version)
[ "$out" = "one-socket $version" ] || fail "one-socket --version printed '$out'"

# The installed daemon on a private socket; --detach returns once it
# listens.
run=$tmp/run
mkdir "$run"
sock=$run/one.socket
ctl=$run/one-socket.ctl
/usr/bin/one-socket --socket "$sock" --ctl-socket "$ctl" --detach \
	--pidfile "$run/pid" --log-file "$run/log" --log-level debug ||
	fail "the installed one-socket did not start"
daemon_pid=$(cat "$run/pid")
/usr/bin/one-socketctl --ctl-socket "$ctl" version >"$tmp/version"
grep -q "$version" "$tmp/version" || fail "one-socketctl version: $(cat "$tmp/version")"

# pair_ctl KEY MODE INPUT OUTPUT: one one-socketctl pair in the background.
pair_ctl() {
	printf '%s\n' "$3" |
		/usr/bin/one-socketctl --socket "$sock" --timeout 60s pair "$1" --mode "$2" >"$4"
}

# expect FILE LINE: FILE holds exactly LINE.
expect() {
	[ "$(cat "$1")" = "$2" ] || fail "${1##*/} holds '$(cat "$1")', not '$2'"
}

echo "$prog: two one-socketctl clients through the installed daemon"
pair_ctl shell-key server "from the server" "$tmp/ctl-server.out" &
p1=$!
pair_ctl shell-key client "from the client" "$tmp/ctl-client.out" &
p2=$!
wait $p1 || fail "one-socketctl pair --mode server failed"
wait $p2 || fail "one-socketctl pair --mode client failed"
expect "$tmp/ctl-server.out" "from the client"
expect "$tmp/ctl-client.out" "from the server"

echo "$prog: a C program built against libspbroker-dev, with each archive"
cat >"$tmp/pairc.c" <<'EOF'
/* pairc SOCKET KEY server|client MESSAGE: get a pair from the broker,
 * send MESSAGE and a newline, then copy what the peer sends to stdout. */
#include <socketpair-broker/helper.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char *err = NULL;
	char buf[4096];
	ssize_t n;
	int fd;

	if (argc != 5) {
		fprintf(stderr, "usage: pairc SOCKET KEY server|client MESSAGE\n");
		return 2;
	}
	fd = sp_broker_get_pair(argv[1], argv[2], strcmp(argv[3], "server") == 0, &err);
	if (fd < 0) {
		fprintf(stderr, "pairc: sp_broker_get_pair: %s\n", err ? err : "?");
		free(err);
		return 1;
	}
	if (dprintf(fd, "%s\n", argv[4]) < 0 || shutdown(fd, SHUT_WR) < 0) {
		perror("pairc: send");
		return 1;
	}
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			return 1;
	}
	if (n < 0) {
		perror("pairc: read");
		return 1;
	}
	close(fd);
	return fflush(stdout) == 0 ? 0 : 1;
}
EOF
# The system's pkg-config, not one of a caller's PKG_CONFIG_PATH.
pc() { env -u PKG_CONFIG_PATH -u PKG_CONFIG_LIBDIR pkg-config "$@"; }
# spbroker is the Go c-archive, spbroker-c the runtime-free one; the same
# program builds against either, by name.
for pkg in spbroker spbroker-c; do
	[ "$(pc --modversion $pkg)" = "$version" ] || fail "pkg-config --modversion $pkg: $(pc --modversion $pkg)"
	[ "$(pc --variable=libdir $pkg)" = "/usr/lib/$multiarch" ] ||
		fail "$pkg.pc's libdir is $(pc --variable=libdir $pkg), not /usr/lib/$multiarch"
	want=false
	[ $pkg = spbroker-c ] || want=true
	[ "$(pc --variable=go_runtime $pkg)" = $want ] ||
		fail "$pkg.pc says go_runtime=$(pc --variable=go_runtime $pkg), not $want"
	# shellcheck disable=SC2046 # pkg-config's output is a list of words
	cc -Wall -Wextra -Werror -o "$tmp/pairc-$pkg" "$tmp/pairc.c" $(pc --cflags --libs $pkg) ||
		fail "the C program does not build with pkg-config $pkg against the installed package"
done
# Each links the archive its name says: a Go runtime (crosscall2 is
# every c-archive's) in one, none in the other. (nm to a file: grep -q
# would stop reading early, and pipefail count nm's SIGPIPE.)
for pkg in spbroker spbroker-c; do
	nm "$tmp/pairc-$pkg" >"$tmp/pairc-$pkg.nm" || fail "nm pairc-$pkg failed"
done
grep -qw crosscall2 "$tmp/pairc-spbroker.nm" ||
	fail "the program built with pkg-config spbroker has no Go runtime"
if grep -qw crosscall2 "$tmp/pairc-spbroker-c.nm"; then
	fail "the program built with pkg-config spbroker-c has a Go runtime"
fi

# pair_c PKG KEY SERVER-MESSAGE CLIENT-MESSAGE [CLIENT-PKG]: the C program
# built with PKG pairs as server with the one built with CLIENT-PKG (PKG
# unless given) as client.
pair_c() {
	local client=${5:-$1}
	timeout 60 "$tmp/pairc-$1" "$sock" "$2" server "$3" >"$tmp/$2-server.out" &
	p1=$!
	timeout 60 "$tmp/pairc-$client" "$sock" "$2" client "$4" >"$tmp/$2-client.out" &
	p2=$!
	wait $p1 || fail "the C program ($1) as server failed"
	wait $p2 || fail "the C program ($client) as client failed"
	expect "$tmp/$2-server.out" "$4"
	expect "$tmp/$2-client.out" "$3"
}
pair_c spbroker c-key "C server" "C client"
pair_c spbroker-c c-key-c "C server" "C client"
# The two archives with each other.
pair_c spbroker-c c-key-both "runtime-free" "Go archive" spbroker

# And across the two clients: the C library meets one-socketctl.
timeout 60 "$tmp/pairc-spbroker" "$sock" mixed-key server "C side" >"$tmp/mixed-c.out" &
p1=$!
pair_ctl mixed-key client "shell side" "$tmp/mixed-ctl.out" &
p2=$!
wait $p1 || fail "the C program failed to pair with one-socketctl"
wait $p2 || fail "one-socketctl failed to pair with the C program"
expect "$tmp/mixed-c.out" "shell side"
expect "$tmp/mixed-ctl.out" "C side"

paired=$(/usr/bin/one-socketctl --ctl-socket "$ctl" status --json | tr ',' '\n' | sed -n 's/.*"paired_total":[[:space:]]*\([0-9]*\).*/\1/p')
[ "$paired" = 5 ] || fail "the daemon counts $paired pairs, not 5"

/usr/bin/one-socketctl --ctl-socket "$ctl" stop >/dev/null || fail "one-socketctl stop failed"
wait_gone "$daemon_pid" || fail "the daemon did not stop"
daemon_pid=
[ ! -e "$sock" ] || fail "the stopped daemon left $sock"

echo "$prog: purging both packages"
dpkg_locked --purge "${packages[@]}" >"$tmp/dpkg-purge.log" || fail "dpkg --purge failed"
installed=false
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || status=
	case $status in
	'' | *' not-installed') ;;
	*) fail "$p is '$status' after the purge, not gone" ;;
	esac
done
for f in /usr/bin/one-socket /usr/bin/one-socketctl /usr/include/socketpair-broker \
	"/usr/lib/$multiarch/libspbroker.a" "/usr/lib/$multiarch/libspbroker-c.a" \
	"/usr/lib/$multiarch/pkgconfig/spbroker.pc" "/usr/lib/$multiarch/pkgconfig/spbroker-c.pc" \
	/lib/systemd/system/one-socket.service \
	"$wants/one-socket.socket" "$wants/one-socket-control.socket"; do
	if [ -e "$f" ] || [ -L "$f" ]; then
		fail "$f is still there after the purge"
	fi
done

echo "$prog: ok: built, lintian-clean, installed, paired (one-socketctl, and C with spbroker and spbroker-c), purged"
