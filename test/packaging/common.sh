# SPDX-License-Identifier: Apache-2.0
#
# common.sh - sourced by the scripts in test/packaging/, never run.
#
# Provides: root (the repository), skip, fail, need, find_go,
# meson_version, export_tree, make_tarball, build_debs, tree_key,
# cached_debs and cache_debs. The scripts set -euo pipefail themselves.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
prog=${0##*/}

# skip WHY...: the test cannot run here; 77 is the "skipped" status.
skip() {
	echo "$prog: SKIP: $*" >&2
	exit 77
}

fail() {
	echo "$prog: FAIL: $*" >&2
	exit 1
}

# need TOOL DEBIAN-PACKAGE...: pairs of a command and the Debian package
# that has it; skips, naming every missing package, if any is absent.
need() {
	local missing=" "
	while [ $# -ge 2 ]; do
		# Each package once, however many of its tools are missing.
		if ! command -v "$1" >/dev/null 2>&1 && [[ $missing != *" $2 "* ]]; then
			missing+="$2 "
		fi
		shift 2
	done
	if [ "$missing" != " " ]; then
		skip "missing tools; install them with: apt-get install --no-install-recommends${missing% }"
	fi
}

# find_go prints the go command the package builds will use: $GO, else
# go on PATH, else /usr/local/go/bin/go (debian/rules and the spec look
# in the same order).
find_go() {
	local go=${GO:-}
	if [ -z "$go" ]; then
		go=$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)
	fi
	"$go" version >/dev/null 2>&1 || return 1
	echo "$go"
}

# meson_version prints version: from the project() call of meson.build.
meson_version() {
	local v
	v=$(sed -n "s/^[[:space:]]*version:[[:space:]]*'\([^']*\)'.*/\1/p" "$root/meson.build" | head -n 1)
	[ -n "$v" ] || fail "no version: '...' line in meson.build"
	echo "$v"
}

# export_tree DIR: copy the source tree into DIR (created). By default
# that is every file git tracks, as it is now in the working tree (edits
# included, untracked files left out); with ONE_SOCKET_PKG_SOURCE=HEAD it
# is the last commit. Neither touches the index, a ref or the tree.
export_tree() {
	local dest=$1
	mkdir -p "$dest"
	case ${ONE_SOCKET_PKG_SOURCE:-worktree} in
	HEAD)
		git -C "$root" archive --format=tar HEAD | tar -xf - -C "$dest"
		;;
	worktree)
		# A tracked file deleted in the working tree is left out.
		(
			cd "$root"
			git ls-files -z --cached | while IFS= read -r -d '' f; do
				if [ -e "$f" ] || [ -L "$f" ]; then
					printf '%s\0' "$f"
				fi
			done | tar --null --no-recursion -T - -cf -
		) | tar -xf - -C "$dest"
		;;
	*)
		fail "ONE_SOCKET_PKG_SOURCE must be worktree or HEAD, not '$ONE_SOCKET_PKG_SOURCE'"
		;;
	esac
}

# make_tarball FILE PREFIX WORKDIR: FILE, a tar.gz of the same tree with
# every path under PREFIX/ (what the RPM spec's Source0 is); the tree is
# staged in WORKDIR, which the caller removes.
make_tarball() {
	local file=$1 prefix=$2 work=$3
	export_tree "$work/$prefix"
	tar -C "$work" --owner=0 --group=0 --sort=name -czf "$file" "$prefix"
}

# build_debs SRC LOG: dpkg-buildpackage -us -uc -b in SRC, a tree that
# export_tree wrote, with its output in LOG; the .debs land in SRC's
# parent directory.
build_debs() {
	if ! (cd "$1" && dpkg-buildpackage -us -uc -b) >"$2" 2>&1; then
		tail -n 60 "$2" >&2
		fail "dpkg-buildpackage failed (the end of its log is above)"
	fi
}

# The .debs that deb.sh built last, for test/systemd/nspawn.sh to install
# in its containers rather than build them again. Each build's are in a
# directory of their own, named by tree_key of the tree they were built
# from.
deb_cache=${ONE_SOCKET_DEB_CACHE:-/var/tmp/one-socket-debs}

# tree_key DIR: a name for the tree in DIR as export_tree wrote it (the
# names, modes and contents of its files) and the Go that builds it.
tree_key() {
	local go
	go=$(find_go) || fail "no Go toolchain"
	{
		tar -C "$1" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - .
		"$go" version
	} | sha256sum | cut -c1-16
}

# private_dir DIR [create]: fail unless DIR is ours and nobody else may
# write to it (the caches are in /var/tmp, where anyone may take a name
# first); with "create", make it first if there is none.
private_dir() {
	if [ "${2-}" = create ] && [ ! -e "$1" ] && [ ! -L "$1" ]; then
		mkdir -p -- "$(dirname -- "$1")"
		mkdir -m 0755 -- "$1"
	fi
	if [ ! -d "$1" ] || [ -L "$1" ] || [ ! -O "$1" ] || [ -n "$(find "$1" -maxdepth 0 -perm /022)" ]; then
		fail "$1 must be a directory of $(id -un)'s that nobody else may write to; remove it"
	fi
}

# cached_debs KEY: print the directory that holds the .debs built from the
# tree KEY names, if there is one.
cached_debs() {
	[ -d "$deb_cache" ] || return 1
	private_dir "$deb_cache"
	[ -d "$deb_cache/$1" ] || return 1
	echo "$deb_cache/$1"
}

# cache_debs KEY DEB...: keep the .debs built from the tree KEY names, for
# cached_debs. The directory appears whole or not at all; a second build
# of the same tree keeps the first one's. Builds older than a week go.
cache_debs() {
	local key=$1 new
	shift
	private_dir "$deb_cache" create
	new=$(mktemp -d "$deb_cache/.new.XXXXXX")
	cp -- "$@" "$new/"
	chmod 0755 "$new"
	mv -T -- "$new" "$deb_cache/$key" 2>/dev/null || rm -rf -- "$new"
	find "$deb_cache" -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf -- {} +
}
