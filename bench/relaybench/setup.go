package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/one-socket/one-socket/libspbroker"
)

// A path is how the near end (this process) and the far program are
// joined.
type path int

const (
	// direct: both got their ends from the broker.
	direct path = iota
	// relay: the far program listens on a path, reached by one-socketctl
	// pair --connect; the near end got its pair directly.
	relay
	// relay2: both ends through one-socketctl: the near end listens,
	// reached by --connect; the far program connects to --listen's path.
	relay2
	// handoff: as direct should be: the near end listens, reached by
	// --connect --handoff, which gives its connection to the other
	// one-socketctl's command (--handoff -- CMD, which takes a socket).
	handoff
	// handoffHolds: --handoff on two ends that both hold a connection
	// (--connect and --listen): one gives its connection to the other,
	// which relays it, so one relay remains.
	handoffHolds
	// socat: socat between two paths, no broker.
	socat
	// floorRelay, naiveRelay, spliceRelay: as relay, with relaybench
	// yardstick in the place of one-socketctl (yardstick.go).
	floorRelay
	naiveRelay
	spliceRelay
)

// A setup is one configuration, joined and ready to measure.
type setup struct {
	me    int     // the near end's connection
	procs []*proc // what was started, to finish
	relay *proc   // the relaying process, for memory and CPU; nil if none
	ready *proc   // whose output carries the far program's "ready"
}

// bench holds what every configuration needs.
type bench struct {
	sock  string // the broker's socket
	ctl   string // one-socketctl
	socat string // socat, if found
	self  string // this executable, which is the far program too
	dir   string // for the sockets of paths
	keys  int
}

func (b *bench) key() string {
	b.keys++
	return "relaybench-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(b.keys)
}

// join starts the programs of p with far (echo or sink) as the far end,
// one-socketctl with ctlEnv added to its environment, gets the near end's
// connection, and waits for the far program to have its own.
func (b *bench) join(p path, far string, socatArgs, ctlEnv []string) (_ *setup, err error) {
	s := &setup{me: -1}
	defer func() {
		if err != nil {
			s.abort()
		}
	}()
	key := b.key()
	near := filepath.Join(b.dir, "near.sock")
	farPath := filepath.Join(b.dir, "far.sock")
	os.Remove(near)
	os.Remove(farPath)
	startEnv := func(name string, env []string, argv ...string) *proc {
		if err != nil {
			return nil
		}
		var pr *proc
		if pr, err = startProc(name, env, argv...); err == nil {
			s.procs = append(s.procs, pr)
		}
		return pr
	}
	start := func(name string, argv ...string) *proc { return startEnv(name, nil, argv...) }
	// ctl runs one-socketctl pair, bounded: --timeout for the pairing,
	// its adapters' own 30 s default for the program's connection.
	ctl := func(name string, args ...string) *proc {
		argv := append([]string{b.ctl, "pair", "--socket", b.sock, "--timeout", "20s"}, args...)
		return startEnv(name, ctlEnv, argv...)
	}
	farProg := func(how ...string) []string {
		return append([]string{b.self, far}, how...)
	}
	nearListen := func() int {
		if err != nil {
			return -1
		}
		var lfd int
		lfd, err = listenPath(near)
		return lfd
	}
	nearAccept := func(lfd int) {
		if err == nil {
			s.me, err = acceptOne(lfd, near, setupWait)
		}
	}

	switch p {
	case direct:
		s.ready = start("far", farProg("-s", b.sock, "-k", key)...)
		if err == nil {
			s.me, err = brokerPair(b.sock, key, libspbroker.ModeClient, setupWait)
		}
	case relay:
		s.ready = start("far", farProg("-listen", farPath)...)
		s.relay = ctl("one-socketctl --connect", "--mode", "server", "--connect", farPath, key)
		if err == nil {
			s.me, err = brokerPair(b.sock, key, libspbroker.ModeClient, setupWait)
		}
	case floorRelay, naiveRelay, spliceRelay:
		kind := map[path]string{floorRelay: "floor", naiveRelay: "naive", spliceRelay: "splice"}[p]
		s.ready = start("far", farProg("-listen", farPath)...)
		s.relay = start("yardstick -kind "+kind, b.self, "yardstick", "-kind", kind, "-s", b.sock, "-k", key, "-connect", farPath)
		if err == nil {
			s.me, err = brokerPair(b.sock, key, libspbroker.ModeClient, setupWait)
		}
	case relay2:
		lfd := nearListen()
		s.relay = ctl("one-socketctl --connect", "--mode", "client", "--connect", near, key)
		ctl("one-socketctl --listen", "--mode", "server", "--listen", farPath, key)
		s.ready = start("far", farProg("-connect", farPath)...)
		nearAccept(lfd)
	case handoff:
		lfd := nearListen()
		ctl("one-socketctl --connect --handoff", "--mode", "client", "--connect", near, "--handoff", key)
		s.ready = ctl("one-socketctl --handoff -- far", append([]string{"--mode", "server", "--handoff", key, "--"}, farProg("-fd", "3")...)...)
		nearAccept(lfd)
	case handoffHolds:
		lfd := nearListen()
		ctl("one-socketctl --connect --handoff", "--mode", "client", "--connect", near, "--handoff", key)
		ctl("one-socketctl --listen --handoff", "--mode", "server", "--listen", farPath, "--handoff", key)
		s.ready = start("far", farProg("-connect", farPath)...)
		nearAccept(lfd)
	case socat:
		if b.socat == "" {
			return nil, fmt.Errorf("socat not found")
		}
		s.ready = start("far", farProg("-listen", farPath)...)
		argv := append(append([]string{b.socat}, socatArgs...), "UNIX-LISTEN:"+near, "UNIX-CONNECT:"+farPath)
		s.relay = start("socat", argv...)
		if err == nil {
			s.me, err = dialPath(near, setupWait)
		}
	}
	if err != nil {
		return nil, err
	}
	return s, s.ready.expect("ready", setupWait)
}

// finish closes the near end and waits for every program to exit, as
// each does at the end of its stream.
func (s *setup) finish() error {
	closeFD(&s.me)
	var first error
	for _, p := range s.procs {
		if err := p.finish(10 * time.Second); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (s *setup) abort() {
	closeFD(&s.me)
	for _, p := range s.procs {
		p.kill()
	}
	for _, p := range s.procs {
		p.finish(10 * time.Second)
	}
}
