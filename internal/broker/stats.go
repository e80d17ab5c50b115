package broker

import (
	"errors"
	"sync/atomic"

	"github.com/one-socket/one-socket/libspbroker"
)

// ProtocolErrorKind names a kind of protocol violation a client committed.
type ProtocolErrorKind int

// Kinds of protocol violation, counted separately. The first eight follow
// the protocol's validation rules; Truncated is a GET_PAIR cut short by a
// hang-up, Trailing is data past the GET_PAIR and its padding.
const (
	ErrKindVersion ProtocolErrorKind = iota
	ErrKindFlags
	ErrKindRequest
	ErrKindSize
	ErrKindDescriptors
	ErrKindUnexpected
	ErrKindMode
	ErrKindKeyLength
	ErrKindTruncated
	ErrKindTrailing
	numErrKinds
)

var errKindNames = [numErrKinds]string{
	"version", "flags", "request", "size", "descriptors",
	"unexpected", "mode", "key_len", "truncated", "trailing",
}

func (k ProtocolErrorKind) String() string {
	if k < 0 || k >= numErrKinds {
		return "unknown"
	}
	return errKindNames[k]
}

// kindOf maps a validation error to its counter.
func kindOf(err error) ProtocolErrorKind {
	for k, e := range [...]error{
		libspbroker.ErrVersion, libspbroker.ErrFlags, libspbroker.ErrRequest,
		libspbroker.ErrSize, libspbroker.ErrFDCount, libspbroker.ErrUnexpected,
		libspbroker.ErrMode, libspbroker.ErrKeyLength,
	} {
		if errors.Is(err, e) {
			return ProtocolErrorKind(k)
		}
	}
	return ErrKindTruncated
}

// Stats is a snapshot of a Broker's counters.
type Stats struct {
	Accepted  uint64 // connections accepted (refused ones included)
	Paired    uint64 // pairs handed out (two clients each)
	Refused   uint64 // connections closed at once for lack of room, or over their user's MaxConnsPerUID
	Shed      uint64 // handshakes closed to make room for another user's connection
	TimedOut  uint64 // clients that did not send a whole GET_PAIR in time
	Vanished  uint64 // waiting clients that hung up before being paired
	Denied    uint64 // requests the Authorizer refused
	OverQuota uint64 // requests refused because their user had MaxWaitingPerUID waiting
	Expired   uint64 // waiting clients disconnected after MaxWait
	// Restored counts connections taken back after a crash whose request
	// was whole (HandedConn.Reread); StoreFailed, ConnStore calls that
	// failed (a client not kept, or a copy not released).
	Restored    uint64
	StoreFailed uint64
	Waiting     int // clients waiting for a peer now
	Kept        int // waiting clients kept in the ConnStore now, for a crash
	Conns       int // open client connections now (handshaking and waiting)

	// WaitingByMode splits Waiting by the waiters' mode, indexed by
	// libspbroker.Mode (none, client, server).
	WaitingByMode [NumModes]int

	// Upgrades counts the upgrades in place this daemon's run went
	// through (CountUpgrade), carried like the totals.
	Upgrades uint64

	// Wait is how long each pair's waiter waited for its peer, in
	// WaitBuckets; counted at pairing, not carried across upgrades.
	Wait WaitHistogram

	// ProtocolErrors counts violations by kind, indexed by ProtocolErrorKind.
	ProtocolErrors [numErrKinds]uint64
}

// ProtocolErrorsByName returns the protocol error counters keyed by kind name.
func (s *Stats) ProtocolErrorsByName() map[string]uint64 {
	m := make(map[string]uint64, numErrKinds)
	for k, n := range s.ProtocolErrors {
		m[ProtocolErrorKind(k).String()] = n
	}
	return m
}

// SetProtocolErrorsByName sets the protocol error counters from names as
// ProtocolErrorsByName gives them; unknown names are ignored.
func (s *Stats) SetProtocolErrorsByName(m map[string]uint64) {
	for k := range s.ProtocolErrors {
		s.ProtocolErrors[k] = m[ProtocolErrorKind(k).String()]
	}
}

// counters are written by the loop goroutine and read by Stats.
type counters struct {
	accepted, paired, refused, timedOut, vanished atomic.Uint64
	denied, overQuota, expired, shed              atomic.Uint64
	restored, storeFailed, upgrades               atomic.Uint64
	conns, kept                                   atomic.Int64
	waitingByMode                                 [NumModes]atomic.Int64 // Waiting is their sum
	protocol                                      [numErrKinds]atomic.Uint64
	wait                                          waitCounters
}

// NumModes is the number of pairing modes (libspbroker.ModeMax).
const NumModes = int(libspbroker.ModeMax)

// WaitBuckets are the upper bounds, in seconds, of the wait histogram's
// buckets; a last bucket takes the longer waits.
var WaitBuckets = [...]float64{0.001, 0.01, 0.1, 1, 10, 60, 600, 3600}

// waitBucketNS are WaitBuckets in nanoseconds, for the loop.
var waitBucketNS = func() (ns [len(WaitBuckets)]int64) {
	for i, b := range WaitBuckets {
		ns[i] = int64(b * 1e9)
	}
	return
}()

// WaitHistogram is a snapshot of the wait histogram: Counts[i] counts the
// waits in bucket i alone (not cumulative), the last one beyond every
// bound; SumSeconds is their sum.
type WaitHistogram struct {
	Counts     [len(WaitBuckets) + 1]uint64
	SumSeconds float64
}

// Count is the number of waits observed.
func (h *WaitHistogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// waitCounters is the histogram's live form: written by the loop alone
// with atomic adds, no lock and no allocation.
type waitCounters struct {
	counts [len(WaitBuckets) + 1]atomic.Uint64
	sumNS  atomic.Uint64
}

func (w *waitCounters) observe(ns int64) {
	if ns < 0 {
		ns = 0
	}
	i := 0
	for i < len(waitBucketNS) && ns > waitBucketNS[i] {
		i++
	}
	w.counts[i].Add(1)
	w.sumNS.Add(uint64(ns))
}

// CountUpgrade counts an upgrade in place that this engine took over.
func (b *Broker) CountUpgrade() { b.stats.upgrades.Add(1) }

// Stats returns a snapshot of the counters; safe from any goroutine.
func (b *Broker) Stats() Stats {
	c := &b.stats
	s := Stats{
		Accepted:    c.accepted.Load(),
		Paired:      c.paired.Load(),
		Refused:     c.refused.Load(),
		Shed:        c.shed.Load(),
		TimedOut:    c.timedOut.Load(),
		Vanished:    c.vanished.Load(),
		Denied:      c.denied.Load(),
		OverQuota:   c.overQuota.Load(),
		Expired:     c.expired.Load(),
		Restored:    c.restored.Load(),
		StoreFailed: c.storeFailed.Load(),
		Kept:        int(c.kept.Load()),
		Conns:       int(c.conns.Load()),
		Upgrades:    c.upgrades.Load(),
	}
	for i := range c.protocol {
		s.ProtocolErrors[i] = c.protocol[i].Load()
	}
	for i := range c.waitingByMode {
		s.WaitingByMode[i] = int(c.waitingByMode[i].Load())
		s.Waiting += s.WaitingByMode[i]
	}
	for i := range c.wait.counts {
		s.Wait.Counts[i] = c.wait.counts[i].Load()
	}
	s.Wait.SumSeconds = float64(c.wait.sumNS.Load()) / 1e9
	return s
}

// Carry adds the totals of s, a previous engine's, to this one's, so that
// the counters cover a daemon's whole run across upgrades and restarts.
// The gauges (Waiting, Conns, Kept) follow the clients and are not
// carried, nor is the wait histogram.
func (b *Broker) Carry(s Stats) {
	c := &b.stats
	c.accepted.Add(s.Accepted)
	c.paired.Add(s.Paired)
	c.refused.Add(s.Refused)
	c.shed.Add(s.Shed)
	c.timedOut.Add(s.TimedOut)
	c.vanished.Add(s.Vanished)
	c.denied.Add(s.Denied)
	c.overQuota.Add(s.OverQuota)
	c.expired.Add(s.Expired)
	c.restored.Add(s.Restored)
	c.storeFailed.Add(s.StoreFailed)
	c.upgrades.Add(s.Upgrades)
	for i, n := range s.ProtocolErrors {
		c.protocol[i].Add(n)
	}
}
