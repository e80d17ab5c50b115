package handover

import (
	"errors"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
)

// ForStore describes conns for the file descriptor store at time now, and
// returns with it the descriptors to store: those of conns not stored
// already under a name of their own (HandedConn.Stored), in order. A
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
		if h.Stored == 0 {
			fds = append(fds, h.FD)
		}
	}
	s.Counts.Clients = len(s.Conns)
	return s, fds
}

// Restored is what a start took back from the store.
type Restored struct {
	Conns []broker.HandedConn // matched to their description, ready to serve
	Lost  int                 // described, but not passed back: hung up meanwhile
	Stray int                 // passed back without a description: closed
	Kept  int                 // stored while waiting, with no description: read again
	// Closed lists the ids of kept copies closed here as unusable (no
	// socket): the store still holds them, for the caller to remove.
	Closed []uint64
	Counts Counts  // what the stop that stored them counted
	Totals *Totals // the engine's counters when they were stored, or nil
	// Described says a stop's description came back: the clients were
	// stored by a stop, not only kept for a crash.
	Described bool
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
	return Restore(s, fds, nil, now)
}

// Restore takes back what the store passed: clients stored at a stop
// (fds), described by desc, and clients each stored under a name of its
// own while it waited (kept, descriptor to id), which desc may describe
// too and which need no description. desc is nil after a crash. A kept
// client, and a described waiter whose request was only peeked at, has
// its request read again from its socket (Reread): what a description
// says of it may be out of date, and reading it again cannot pair a
// client twice. Unknown descriptors in fds are closed; the caller owns
// the rest, in the result's Conns.
func Restore(desc *State, fds []int, kept map[int]uint64, now time.Time) *Restored {
	r := &Restored{}
	byIno := make(map[uint64]int, len(fds)+len(kept))
	stray := func(fd int) {
		unix.Close(fd)
		if id, ok := kept[fd]; ok {
			r.Closed = append(r.Closed, id)
			delete(kept, fd)
		}
		r.Stray++
	}
	add := func(fd int) {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			stray(fd)
			return
		}
		if old, dup := byIno[st.Ino]; dup {
			// The same socket twice: one copy is enough.
			stray(old)
		}
		byIno[st.Ino] = fd
	}
	for _, fd := range fds {
		add(fd)
	}
	keptFDs := make([]int, 0, len(kept))
	for fd := range kept {
		keptFDs = append(keptFDs, fd)
	}
	slices.Sort(keptFDs)
	for _, fd := range keptFDs {
		add(fd)
	}
	if desc != nil {
		r.Described = true
		r.Totals = desc.Totals
		if desc.Counts != nil {
			r.Counts = *desc.Counts
		}
		gap := max(now.Sub(desc.Saved), 0)
		for _, c := range desc.Conns {
			fd, ok := byIno[c.Ino]
			if !ok {
				r.Lost++
				continue
			}
			delete(byIno, c.Ino)
			h := c.Engine(fd)
			h.Since += gap
			h.Stored = kept[fd]
			if h.Waiting && h.Consumed == 0 {
				h.Reread = true
			}
			r.Conns = append(r.Conns, h)
		}
	}
	// Left: kept clients no description knows, and strays.
	left := slices.Sorted(maps.Values(byIno))
	for _, fd := range left {
		if id, ok := kept[fd]; ok {
			r.Conns = append(r.Conns, broker.HandedConn{FD: fd, Stored: id, Reread: true})
			r.Kept++
			continue
		}
		stray(fd)
	}
	return r
}
