package main

// The start of the Go runtime inside a C host: see spbroker_rt.h for the
// three constructors and their order. The Cgo call below is the only
// reference to spbroker_rt.c's object, so a linker takes that object after
// go.o and its constructor runs after the runtime's.

// #include "spbroker_rt.h"
import "C"

import (
	"os"
)

// init runs on the runtime's first thread once the runtime is initialised
// (its cgroup limit file is open by then), before the library can be
// called. It opens the poller's descriptors now, while the host is still
// in its constructors, instead of at the first call, and then lets
// spbroker_rt.c's constructor, which waits for it, return.
func init() {
	var poller C.int
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
		poller = 1
	}
	C.spbroker_rt_started(poller)
}
