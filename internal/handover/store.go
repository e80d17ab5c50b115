package handover

import (
	"errors"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
)

// ForStore describes conns for the file descriptor store at time now, and
// returns with it the descriptors to store, in the same order. A
// connection whose socket cannot be identified is left out of both (and
// stays the caller's, to close).
func ForStore(conns []broker.HandedConn, now time.Time) (*State, []int) {
	s := &State{Version: Version, Saved: now, Counts: &Counts{}}
	var fds []int
	for _, h := range conns {
		var st unix.Stat_t
		if err := unix.Fstat(h.FD, &st); err != nil {
			continue
		}
		c := FromEngine(h)
		c.Ino = st.Ino
		s.Conns = append(s.Conns, c)
		fds = append(fds, h.FD)
	}
	s.Counts.Clients = len(fds)
	return s, fds
}

// Restored is what a start took back from the store.
type Restored struct {
	Conns  []broker.HandedConn // matched to their description, ready to serve
	Lost   int                 // described, but not passed back: hung up meanwhile
	Stray  int                 // passed back without a description: closed
	Counts Counts              // what the stop that stored them counted
	Totals *Totals             // the engine's counters when they were stored, or nil
}

// ReadStored reads the State a stop stored, from f (the memfd the store
// passed back, at any offset).
func ReadStored(f *os.File) (*State, error) {
	s, err := Decode(io.NewSectionReader(f, 0, maxSize+1))
	if err != nil {
		return nil, err
	}
	if s.Process != nil {
		return nil, errors.New("an upgrade's description, not a stored one")
	}
	if s.Saved.IsZero() {
		return nil, errors.New("no time of saving")
	}
	return s, nil
}

// Match pairs the descriptors the store passed back with the clients s
// describes, by socket inode, so that the order the manager passes them
// in does not matter. Each wait goes on from where it was: the time since
// s was saved is added. Descriptors without a description are closed; the
// caller owns the rest, in the result's Conns.
func (s *State) Match(fds []int, now time.Time) *Restored {
	r := &Restored{Totals: s.Totals}
	if s.Counts != nil {
		r.Counts = *s.Counts
	}
	byIno := make(map[uint64]int, len(fds))
	for _, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			unix.Close(fd)
			r.Stray++
			continue
		}
		if old, dup := byIno[st.Ino]; dup {
			// The same socket twice: one copy is enough.
			unix.Close(old)
			r.Stray++
		}
		byIno[st.Ino] = fd
	}
	gap := max(now.Sub(s.Saved), 0)
	for _, c := range s.Conns {
		fd, ok := byIno[c.Ino]
		if !ok {
			r.Lost++
			continue
		}
		delete(byIno, c.Ino)
		h := c.Engine(fd)
		h.Since += gap
		r.Conns = append(r.Conns, h)
	}
	for _, fd := range byIno {
		unix.Close(fd)
		r.Stray++
	}
	return r
}
