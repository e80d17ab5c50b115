package main

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// setGOMAXPROCS runs Go code on one thread unless the operator chose
// otherwise with the GOMAXPROCS variable. The engine is a single event
// loop; measured on this project's prototypes, one P gave the most pairs
// per CPU-second in every design (doc/performance.md): more Ps only add
// scheduler and GC work on other threads.
func setGOMAXPROCS() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit, since every
// waiting client holds a descriptor, and returns the soft limit in force.
// The Go runtime does the same at start-up; doing it here as well makes the
// limit explicit and lets the daemon report it.
func raiseNoFile() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, os.NewSyscallError("getrlimit", err)
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
			return rl.Cur, os.NewSyscallError("setrlimit", err)
		}
		rl = want
	}
	return rl.Cur, nil
}
