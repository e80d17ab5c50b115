#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# rpm.sh - build the RPM packages from packaging/rpm/one-socket.spec and
# check them without installing: rpmbuild -bb on a tarball of the tree,
# then the names, versions and split of the binary RPMs, the exact file
# list of each (rpm -qlp: libspbroker-devel holds both archives and both
# .pc files) and the pkgconfig() provides.
#
# Run from anywhere: test/packaging/rpm.sh. Root is not needed. Exits 77
# (skipped) when a tool is missing, 1 on a failure. The source is what git
# tracks, as it is in the working tree; ONE_SOCKET_PKG_SOURCE=HEAD takes
# the last commit instead. Go and the module proxy as for any build
# (doc/packaging.md); the build's Go caches are fresh, in the temporary
# directory.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need git git rpmbuild rpm rpm rpm meson meson ninja ninja-build \
	pkg-config pkg-config cc gcc tar tar gzip gzip
find_go >/dev/null || skip "no Go toolchain (\$GO, go on PATH or /usr/local/go/bin/go)"

"$root/test/packaging/versions.sh"
version=$(meson_version)
spec=$root/packaging/rpm/one-socket.spec
release=$(sed -n 's/^Release:[[:space:]]*\([^%[:space:]]*\).*/\1/p' "$spec")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/one-socket-rpm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# same_list WHAT EXPECTED ACTUAL: compare two sorted lists.
same_list() {
	if ! diff -u <(printf '%s\n' "$2" | LC_ALL=C sort) <(printf '%s\n' "$3" | LC_ALL=C sort) >"$tmp/diff"; then
		echo "$prog: $1 differs from what is expected (- expected, + actual):" >&2
		cat "$tmp/diff" >&2
		fail "$1"
	fi
}

top=$tmp/rpmbuild
mkdir -p "$top/SOURCES" "$tmp/tmp"
make_tarball "$top/SOURCES/one-socket-$version.tar.gz" "one-socket-$version" "$tmp/stage"

# On a system whose packages rpm does not know (Debian), BuildRequires
# cannot be checked: --nodeps. Where rpm knows gcc, they are checked.
nodeps=()
rpm -q gcc >/dev/null 2>&1 || nodeps=(--nodeps)

echo "$prog: building the packages (rpmbuild -bb ${nodeps[*]})"
start=$SECONDS
if ! rpmbuild -bb "${nodeps[@]}" \
	--define "_topdir $top" \
	--define "_tmppath $tmp/tmp" \
	"$spec" >"$tmp/build.log" 2>&1; then
	tail -n 60 "$tmp/build.log" >&2
	fail "rpmbuild failed (the end of its log is above)"
fi
echo "$prog: built in $((SECONDS - start)) s"
grep -q '^one-socket.spec: building with go version' "$tmp/build.log" ||
	fail "the build log does not say which Go it used"

# Exactly two binary RPMs: the split.
(cd "$top/RPMS" && find . -name '*.rpm' | sed 's|^\./[^/]*/||') >"$tmp/rpms"
arch=$(rpm --eval '%{_arch}')
dist=$(rpm --eval '%{?dist}')
same_list "the list of RPM files" \
	"one-socket-$version-$release$dist.$arch.rpm
libspbroker-devel-$version-$release$dist.$arch.rpm" "$(cat "$tmp/rpms")"
rpm_daemon=$top/RPMS/$arch/one-socket-$version-$release$dist.$arch.rpm
rpm_devel=$top/RPMS/$arch/libspbroker-devel-$version-$release$dist.$arch.rpm

for f in "$rpm_daemon" "$rpm_devel"; do
	case $f in
	"$rpm_daemon") name=one-socket ;;
	*) name=libspbroker-devel ;;
	esac
	same_list "the header of $name" \
		"$name $version $release$dist $arch one-socket-$version-$release$dist.src.rpm" \
		"$(rpm -qp --qf '%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM}\n' "$f")"
done

# file_list RPM: its paths, with the parts that depend on the rpm
# configuration made uniform: documentation and license directories
# with or without -VERSION (_docdir_fmt), man pages compressed or not,
# and without the /usr/lib/.build-id links of the binaries.
file_list() {
	rpm -qlp "$1" |
		sed -E \
			-e "s#^(/usr/share/(doc|licenses)/[^/]*)-$version(/|$)#\\1\\3#" \
			-e 's#^(/usr/share/man/.*)\.(gz|bz2|xz|zst)$#\1#' |
		grep -v '^/usr/lib/\.build-id\(/\|$\)'
}

libdir=$(rpm --eval '%{_libdir}')
unitdir=$(rpm --eval '%{?_unitdir}')
unitdir=${unitdir:-/usr/lib/systemd/system}

same_list "the files of one-socket" "\
/usr/bin/one-socket
/usr/bin/one-socketctl
$unitdir/one-socket-control.socket
$unitdir/one-socket.service
$unitdir/one-socket.socket
/usr/share/doc/one-socket
/usr/share/doc/one-socket/README.md
/usr/share/doc/one-socket/one-socket.md
/usr/share/doc/one-socket/one-socketctl.md
/usr/share/doc/one-socket/security.md
/usr/share/licenses/one-socket
/usr/share/licenses/one-socket/LICENSE
/usr/share/licenses/one-socket/LICENSE.go
/usr/share/licenses/one-socket/github.com_beorn7_perks-LICENSE
/usr/share/licenses/one-socket/github.com_cespare_xxhash_v2-LICENSE.txt
/usr/share/licenses/one-socket/github.com_munnerz_goautoneg-LICENSE
/usr/share/licenses/one-socket/github.com_prometheus_client_golang-LICENSE
/usr/share/licenses/one-socket/github.com_prometheus_client_golang-NOTICE
/usr/share/licenses/one-socket/github.com_prometheus_client_model-LICENSE
/usr/share/licenses/one-socket/github.com_prometheus_client_model-NOTICE
/usr/share/licenses/one-socket/github.com_prometheus_common-LICENSE
/usr/share/licenses/one-socket/github.com_prometheus_common-NOTICE
/usr/share/licenses/one-socket/github.com_prometheus_procfs-LICENSE
/usr/share/licenses/one-socket/github.com_prometheus_procfs-NOTICE
/usr/share/licenses/one-socket/golang.org_x_sys-LICENSE
/usr/share/licenses/one-socket/google.golang.org_protobuf-LICENSE
/usr/share/man/man8/one-socket.8
/usr/share/man/man8/one-socketctl.8" "$(file_list "$rpm_daemon")"

same_list "the files of libspbroker-devel" "\
/usr/include/socketpair-broker
/usr/include/socketpair-broker/helper.h
/usr/include/socketpair-broker/proto.h
$libdir/libspbroker-c.a
$libdir/libspbroker.a
$libdir/pkgconfig/spbroker-c.pc
$libdir/pkgconfig/spbroker.pc
/usr/share/doc/libspbroker-devel
/usr/share/doc/libspbroker-devel/c-library.md
/usr/share/doc/libspbroker-devel/echo.c
/usr/share/licenses/libspbroker-devel
/usr/share/licenses/libspbroker-devel/LICENSE
/usr/share/licenses/libspbroker-devel/LICENSE.go
/usr/share/man/man3/libspbroker.3" "$(file_list "$rpm_devel")"

# The pkg-config files are announced, for "BuildRequires:
# pkgconfig(spbroker)" or "pkgconfig(spbroker-c)".
for pkg in spbroker spbroker-c; do
	rpm -qp --provides "$rpm_devel" | grep -qx "pkgconfig($pkg) = $version" ||
		fail "libspbroker-devel does not provide pkgconfig($pkg) = $version"
done

# The scriptlets treat the units as debian/ does: the service is restarted
# on upgrade, the sockets are not.
rpm -qp --scripts "$rpm_daemon" >"$tmp/scripts"
grep -q 'try-restart one-socket.service' "$tmp/scripts" ||
	fail "one-socket's scriptlets do not restart the service on upgrade"
if grep -E 'restart .*one-socket(-control)?\.socket' "$tmp/scripts"; then
	fail "one-socket's scriptlets restart a socket unit"
fi

echo "$prog: ok: one-socket and libspbroker-devel $version-$release$dist built, named, split and filled as expected"
