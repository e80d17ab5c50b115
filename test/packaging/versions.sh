#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# versions.sh - check that the packages carry the version meson.build
# gives: the upstream part of debian/changelog's newest entry, the spec's
# Version:, and the newest entry of the spec's %changelog (VERSION-RELEASE).
# Needs nothing but bash, sed and grep; run from anywhere.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

want=$(meson_version)
bad=0

# mismatch WHAT GOT EXPECTED: report one disagreement.
mismatch() {
	echo "$prog: $1 says '$2', but meson.build's version $want asks for '$3'" >&2
	bad=1
}

# debian/changelog: "one-socket (EPOCH:UPSTREAM-REVISION) ..." on line 1.
deb_full=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$root/debian/changelog")
[ -n "$deb_full" ] || fail "cannot read the version on line 1 of debian/changelog"
deb_upstream=${deb_full#*:}
deb_upstream=${deb_upstream%-*}
[ "$deb_upstream" = "$want" ] || mismatch "debian/changelog ($deb_full)" "$deb_upstream" "$want"

spec=$root/packaging/rpm/one-socket.spec
spec_version=$(sed -n 's/^Version:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$spec")
spec_release=$(sed -n 's/^Release:[[:space:]]*\([^%[:space:]]*\).*/\1/p' "$spec")
[ "$spec_version" = "$want" ] || mismatch "the spec's Version:" "$spec_version" "$want"
[ -n "$spec_release" ] || fail "cannot read Release: in $spec"

# The first "* DATE NAME <MAIL> - VERSION-RELEASE" line after %changelog.
spec_log=$(sed -n '/^%changelog/,$s/^\*.* - \([^ ]*\)[[:space:]]*$/\1/p' "$spec" | head -n 1)
[ "$spec_log" = "$want-$spec_release" ] ||
	mismatch "the spec's newest %changelog entry" "$spec_log" "$want-$spec_release"

[ $bad -eq 0 ] || exit 1
echo "$prog: ok: meson.build, debian/changelog ($deb_full) and the spec ($spec_version-$spec_release) agree on $want"
