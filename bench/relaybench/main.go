// Command relaybench measures one-socketctl pair's relay (internal/relay)
// against a direct brokered pair, --handoff and socat: the round-trip
// latency of a 64-byte message carrying a descriptor, the throughput of a
// byte stream, and the relay's memory and CPU. bench/relay.sh builds it
// and runs
//
//	relaybench run -s BROKER_SOCKET -ctl ONE_SOCKETCTL -dir DIR [flags]
//
// which starts each configuration's programs itself (one-socketctl pair,
// socat, relaybench yardstick, and relaybench echo or sink as the far
// end), measures from the near end in its own process, and prints one line
// per configuration and round, then the medians. "relaybench summary
// LOG..." prints the medians over the raw lines of several runs (run -o
// LOG). See doc/performance.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: relaybench run|summary|echo|sink|yardstick [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "echo":
		err = echo(os.Args[2:])
	case "sink":
		err = sink(os.Args[2:])
	case "yardstick":
		err = yardstick(os.Args[2:])
	case "summary":
		err = summarize(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "relaybench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
