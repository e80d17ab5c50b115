#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# security.sh [--online]: holds one-socket.service to the exposure level
# that "systemd-analyze security" gives it today, so that no change to the
# unit loosens its sandbox unnoticed.
#
#   (no flag)  the unit as meson configures it (@bindir@ as /usr/bin),
#              with the socket units, in a scratch root: --offline=yes
#              --root=, so that no unit or drop-in of this machine counts
#   --online   the one-socket.service the running manager has loaded,
#              drop-ins included (inside a container that boots systemd)
#
# It exits 0 at or under the threshold, 1 over it (or if the analysis
# fails), 2 for a bad command line and 77 if systemd-analyze is missing.
# The units say why each setting it still marks is left as it is.
set -euo pipefail

# The threshold, in tenths as --threshold= takes it: 4 is the 0.4 that the
# report prints. Raise it only with a reason in the unit.
threshold=4

online=no
case "${1-}" in
"") ;;
--online) online=yes ;;
*)
	echo "usage: $0 [--online]" >&2
	exit 2
	;;
esac
[ $# -le 1 ] || {
	echo "usage: $0 [--online]" >&2
	exit 2
}

if ! command -v systemd-analyze >/dev/null; then
	echo "systemd-analyze is not installed: apt-get install systemd" >&2
	exit 77
fi

check() {
	local rc=0
	systemd-analyze security --threshold="$threshold" "$@" || rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "one-socket.service is over the threshold of $threshold tenths, or could not be assessed (status $rc)" >&2
		return 1
	fi
	echo "one-socket.service is within the threshold of $threshold tenths"
}

if [ "$online" = yes ]; then
	check one-socket.service
	exit
fi

units=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../systemd" && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dir=$root/usr/lib/systemd/system
mkdir -p "$dir"
sed 's|@bindir@|/usr/bin|g' "$units/one-socket.service.in" >"$dir/one-socket.service"
if grep -n '@[A-Za-z_]*@' "$dir/one-socket.service"; then
	echo "one-socket.service.in has a placeholder this script does not fill" >&2
	exit 1
fi
cp "$units/one-socket.socket" "$units/one-socket-control.socket" "$dir/"
check --offline=yes --root="$root" one-socket.service
