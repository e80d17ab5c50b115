#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# go-build.sh - run "go build" for meson, which has no Go support of its own.
#
# Usage:
#   go-build.sh --find-go
#       Print the go command this script would use, and on a second line
#       its version; exit 1 if there is none.  meson runs this at configure
#       time.
#   go-build.sh [--go GO] --list-commands SOURCE_ROOT
#       Print the name of each command (main package) under cmd/, one a
#       line, so that meson can tell which ones it does not build.
#   go-build.sh [OPTIONS] SOURCE_ROOT OUTPUT PACKAGE
#       Build PACKAGE (e.g. ./capi, ./cmd/one-socket) of the module in
#       SOURCE_ROOT into OUTPUT (relative to the current directory, which
#       under ninja is the build directory).
#
# Options:
#   --go GO            go command found at configure time; $GO, when set,
#                      wins over it.
#   --c-archive        -buildmode=c-archive, with cgo forced on.  Go also
#                      writes its export header, OUTPUT with .h for .a.
#   --version V        link V into main.version (commands only).
#   --depfile FILE     write a Makefile-style dependency file naming every
#                      source file, and the directory, of each package of
#                      this module that PACKAGE is built from, plus go.mod
#                      and go.sum.  Listing the directories makes ninja
#                      rebuild when a file is added to or removed from one.
#   --c-headers DIR    C headers outside the package that cgo code
#                      includes.  Go's build cache does not look at headers
#                      outside a package's directory, so a hash of them is
#                      put in CGO_CPPFLAGS: a changed header then changes
#                      Go's cache key and the C code is compiled again.
#
# The go command is, in order: $GO, --go, "go" on $PATH,
# /usr/local/go/bin/go.  CC, when set (meson sets it to its own C
# compiler), is the compiler cgo uses.  OUTPUT is replaced only when the
# new build differs, so targets linking it are not relinked for nothing.
set -eu

prog=${0##*/}

die() {
	echo "$prog: $*" >&2
	exit 1
}

# depfile_escape quotes names, one a line, as ninja reads them in a depfile.
depfile_escape() {
	sed 's/\$/$$/g; s/[ #]/\\&/g'
}

# find_go prints the go command to use.
find_go() {
	if [ -n "${GO:-}" ]; then
		echo "$GO"
	elif [ -n "$configured_go" ]; then
		echo "$configured_go"
	elif command -v go >/dev/null 2>&1; then
		command -v go
	elif [ -x /usr/local/go/bin/go ]; then
		echo /usr/local/go/bin/go
	else
		return 1
	fi
}

configured_go=
c_archive=false
version=
depfile=
c_headers=
while [ $# -gt 0 ]; do
	case $1 in
	--find-go)
		go=$(find_go) || die "no go command: install Go, put it on PATH, or set GO"
		ver=$("$go" env GOVERSION) || die "$go does not run"
		printf '%s\n%s\n' "$go" "$ver"
		exit 0
		;;
	--list-commands)
		[ $# -eq 2 ] || die "usage: $prog [--go GO] --list-commands SOURCE_ROOT"
		go=$(find_go) || die "no go command: install Go, put it on PATH, or set GO"
		cd "$2"
		[ -d cmd ] || exit 0
		"$go" list -f '{{if eq .Name "main"}}{{.Dir}}{{end}}' ./cmd/... |
			sed -n 's|.*/||p'
		exit 0
		;;
	--go) configured_go=$2; shift 2 ;;
	--c-archive) c_archive=true; shift ;;
	--version) version=$2; shift 2 ;;
	--depfile) depfile=$2; shift 2 ;;
	--c-headers) c_headers=$2; shift 2 ;;
	--) shift; break ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -eq 3 ] || die "usage: $prog [OPTIONS] SOURCE_ROOT OUTPUT PACKAGE"
srcroot=$1
output=$2
pkg=$3

go=$(find_go) || die "no go command: install Go, put it on PATH, or set GO"

# Paths from ninja are relative to the build directory; go runs in the
# source root.
case $output in
/*) abs_output=$output ;;
*) abs_output=$PWD/$output ;;
esac
case $depfile in
/* | '') ;;
*) depfile=$PWD/$depfile ;;
esac
case $c_headers in
/* | '') ;;
*) c_headers=$PWD/$c_headers ;;
esac
outdir=$(dirname "$abs_output")
outname=$(basename "$abs_output")

set -- -trimpath -buildvcs=false
if $c_archive; then
	# cgo compiles the package's C files; without it there is no archive.
	CGO_ENABLED=1
	export CGO_ENABLED
	set -- "$@" -buildmode=c-archive
fi
if [ -n "$version" ]; then
	set -- "$@" "-ldflags=-X main.version=$version"
fi
if [ -n "$c_headers" ]; then
	stamp=$(find "$c_headers" -type f -name '*.h' | LC_ALL=C sort |
		xargs cat | cksum | tr -c '0-9\n' _)
	CGO_CPPFLAGS="${CGO_CPPFLAGS:-} -DSPBROKER_HEADERS_STAMP=$stamp"
	export CGO_CPPFLAGS
fi

cd "$srcroot"

# Build into a private directory beside OUTPUT, then move into place.
tmp=$(mktemp -d "$outdir/.go-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
"$go" build "$@" -o "$tmp/$outname" "$pkg"

# A c-archive comes with its header: libfoo.a -> libfoo.h.
products=$outname
if $c_archive; then
	products="$products ${outname%.a}.h"
fi
for f in $products; do
	if [ -f "$tmp/$f" ] && ! cmp -s "$tmp/$f" "$outdir/$f"; then
		mv -f "$tmp/$f" "$outdir/$f"
	fi
done

if [ -n "$depfile" ]; then
	# One name per line: each package directory and its files, go.mod and
	# go.sum of this module, and the C headers; then in depfile syntax.
	{
		"$go" list -deps -f '{{if and .Module .Module.Main}}{{$d := .Dir}}{{$d}}
{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .CgoFiles}}{{$d}}/{{.}}
{{end}}{{range .CFiles}}{{$d}}/{{.}}
{{end}}{{range .HFiles}}{{$d}}/{{.}}
{{end}}{{range .SFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}' "$pkg"
		echo "$PWD/go.mod"
		if [ -f go.sum ]; then echo "$PWD/go.sum"; fi
		if [ -n "$c_headers" ]; then
			find "$c_headers" -type f -name '*.h'
		fi
	} | LC_ALL=C sort -u | sed '/^$/d' | depfile_escape | {
		printf '%s:' "$(printf '%s\n' "$output" | depfile_escape)"
		while IFS= read -r dep; do
			printf ' \\\n  %s' "$dep"
		done
		printf '\n'
	} >"$depfile.tmp"
	mv -f "$depfile.tmp" "$depfile"
fi
