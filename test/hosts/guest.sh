#!/bin/sh
# guest.sh fetches the kernel the host tests boot their guests with, and
# prints the directory that holds it (boot/vmlinuz-* and lib/modules/).
#
# The kernel is Debian's cloud kernel, the version that the
# linux-image-cloud-amd64 metapackage depends on, downloaded with
# apt-get download and unpacked with dpkg-deb -x: never installed. It is
# cached in $ONE_SOCKET_GUEST_DIR, else $XDG_CACHE_HOME/one-socket/guest,
# else ~/.cache/one-socket/guest, one directory per kernel package, so
# that later runs need neither apt's lists nor the network. CI may run
# this ahead of the tests (after apt-get update); the tests run it too.
#
# Exit status 77 (the test suite's "skipped") when the kernel cannot be
# had here, with the reason on standard error.
set -eu

# HOME may be unset where CI runs; the user's entry in passwd says it.
home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
dir=${ONE_SOCKET_GUEST_DIR:-${XDG_CACHE_HOME:-${home:-/tmp}/.cache}/one-socket/guest}
meta=linux-image-cloud-amd64

skip() {
	echo "guest.sh: $*" >&2
	exit 77
}

# cached prints the newest complete kernel in the cache, if any.
cached() {
	ls -d "$dir"/linux-image-*/boot 2>/dev/null | sort -V | tail -n 1 | sed 's,/boot$,,'
}

command -v apt-cache >/dev/null 2>&1 || skip "apt-cache not found: this is not a Debian system"
pkg=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ <>]*\)$/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
	# No apt lists (a fresh container before apt-get update): an older
	# kernel from the cache serves as well.
	old=$(cached)
	[ -n "$old" ] && { echo "$old"; exit 0; }
	skip "apt knows no $meta (run apt-get update) and $dir holds no kernel"
fi
if [ -d "$dir/$pkg/boot" ]; then
	echo "$dir/$pkg"
	exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -q "$pkg") >"$tmp/log" 2>&1; then
	old=$(cached)
	if [ -n "$old" ]; then
		echo "guest.sh: cannot download $pkg; using $old" >&2
		echo "$old"
		exit 0
	fi
	cat "$tmp/log" >&2
	skip "cannot download $pkg (no network, or stale apt lists: run apt-get update)"
fi
mkdir "$tmp/root"
dpkg-deb -x "$tmp"/*.deb "$tmp/root"
ls "$tmp/root"/boot/vmlinuz-* >/dev/null
# The rename makes the kernel appear whole or not at all; if a concurrent
# fetch got there first, its copy is as good as this one.
if ! mv -T "$tmp/root" "$dir/$pkg" 2>"$tmp/log"; then
	[ -d "$dir/$pkg/boot" ] || { cat "$tmp/log" >&2; exit 1; }
fi
echo "$dir/$pkg"
