# Sourced by the bench scripts: a scratch directory removed at exit, the
# load tools and the daemon built into it, and a broker started on demand.
# Expects $top (the repository) and, to build spload, $shared (the shared
# bench directory).

work=$(mktemp -d)
bpid=
bench_cleanup() {
	if [ -n "$bpid" ]; then
		kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null
	fi
	rm -rf "$work"
}
trap bench_cleanup EXIT

# build_tools [TOOL...] builds the tools named (spload, one-socket,
# one-socketctl, loadtool, relaybench; by default spload, the daemon and
# loadtool) into $work, the Go ones in one go build, and raises the soft
# descriptor limit to the hard one. The environment's CC and CGO_ENABLED
# apply.
build_tools() {
	local tool pkgs=()
	[ $# -gt 0 ] || set -- spload one-socket loadtool
	for tool in "$@"; do
		case $tool in
		spload) "${CC:-cc}" -O2 -Wall -Wextra -pthread -o "$work/spload" "$shared/spload.c" ;;
		one-socket | one-socketctl) pkgs+=("./cmd/$tool") ;;
		loadtool | relaybench) pkgs+=("./bench/$tool") ;;
		*) echo "build_tools: no tool $tool" >&2; return 1 ;;
		esac
	done
	if [ ${#pkgs[@]} -gt 0 ]; then
		(cd "$top" && go build -o "$work/" "${pkgs[@]}")
	fi
	ulimit -n "$(ulimit -Hn)"
}

# start_broker ARGS... starts the daemon on $work/one.socket with ARGS,
# sets $sock and $bpid, and waits for the socket file.
start_broker() {
	sock=$work/one.socket
	"$work/one-socket" --socket "$sock" "$@" &
	bpid=$!
	for _ in $(seq 100); do
		[ -S "$sock" ] && return 0
		sleep 0.05
	done
	echo "the broker did not start" >&2
	return 1
}

# stop_broker stops the daemon start_broker started.
stop_broker() {
	kill "$bpid"
	wait "$bpid" || true
	bpid=
}
