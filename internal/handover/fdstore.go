package handover

import (
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
	"github.com/one-socket/one-socket/internal/systemd"
)

// Restart without loss under systemd. With --fdstore (or $FDSTORE, which
// systemd 254 and later set when FileDescriptorStoreMax= is not zero), a
// stop disconnects nobody: the daemon gives the engine's connections to
// the service manager's file descriptor store (FDSTORE=1, FDNAME=client),
// with a sealed memfd that describes each of them (FDNAME=state) and any
// listening socket the daemon created itself (FDNAME=broker, control).
// systemd keeps them while the service restarts and passes them to the
// next instance with its sockets in LISTEN_FDS (passed.go); a stop for
// good closes them, which clients see as the broker hanging up, as
// without the store. Stored connections are matched to their description
// by socket inode (store.go), so the order systemd passes them in does
// not matter, and a client that hung up meanwhile (systemd drops it from
// the store) is simply missing. Waiting clients are in the store already,
// each under a name of its own, for a crash (crash.go).

// barrierTimeout bounds the wait for systemd to have read the store
// messages before the process exits.
const barrierTimeout = 5 * time.Second

// StoreWanted reports whether stops should use the store: with flag
// (--fdstore), or when $FDSTORE, as getenv reads it, is positive.
func StoreWanted(flag bool, getenv func(string) string) bool {
	_, ok := StoreMax(getenv)
	return flag || ok
}

// StoreMax returns $FDSTORE, the store's size, when it is set and
// positive.
func StoreMax(getenv func(string) string) (int, bool) {
	n, err := strconv.Atoi(getenv("FDSTORE"))
	return n, err == nil && n > 0
}

// FDStore is the daemon's side of the service manager's file descriptor
// store: what a stop puts there and a start takes back, and, as the
// engine's broker.ConnStore, each waiting client's own copy (crash.go).
// The manager holds duplicates: every descriptor passed to a method stays
// the caller's.
type FDStore struct {
	notify *systemd.Notifier
	next   uint64 // the next waiter id; above every id in use
}

// NewFDStore returns the store of the manager n talks to.
func NewFDStore(n *systemd.Notifier) *FDStore {
	return &FDStore{notify: n, next: 1}
}

// StoreListener stores a listening socket this process created, fd,
// under name (FDNameBroker or FDNameControl): clients that connect while
// no daemon runs wait in its queue.
func (s *FDStore) StoreListener(name string, fd int) error {
	return s.notify.Store(name, []int{fd})
}

// StoreClients stores desc, in place of any description an earlier stop
// left, and then fds, at most scm.MaxFD a message, and returns how many of
// fds were sent.
func (s *FDStore) StoreClients(desc *State, fds []int) (int, error) {
	mfd, err := desc.Memfd("one-socket-state", true)
	if err != nil {
		return 0, err
	}
	defer unix.Close(mfd)
	if err := s.notify.StoreRemove(FDNameState); err != nil {
		return 0, err
	}
	if err := s.notify.Store(FDNameState, []int{mfd}); err != nil {
		return 0, err
	}
	sent := 0
	for sent < len(fds) {
		batch := fds[sent:min(sent+scm.MaxFD, len(fds))]
		if err := s.notify.Store(FDNameClient, batch); err != nil {
			return sent, err
		}
		sent += len(batch)
	}
	return sent, nil
}

// Confirm waits until the manager has read everything stored so far: its
// copies keep the connections open once this process's close.
func (s *FDStore) Confirm() error {
	return s.notify.Barrier(barrierTimeout)
}

// ForgetStored empties the store that n reaches of the clients and
// description a start took back, once it serves them, and of the kept
// copies in closed (Restored's Closed): the manager's copies would
// otherwise keep every one of those connections open. It is a function,
// not an FDStore's method, because a start without --fdstore that was
// passed stored clients must empty the store too. Each message the
// manager did not get goes to onErr.
func ForgetStored(n *systemd.Notifier, closed []uint64, onErr func(error)) {
	for _, name := range []string{FDNameClient, FDNameState} {
		if err := n.StoreRemove(name); err != nil {
			onErr(err)
		}
	}
	for _, id := range closed {
		if err := n.StoreRemove(WaiterName(id)); err != nil {
			onErr(err)
		}
	}
}

// TakeStored takes the clients that p holds from the store out of it (p
// keeps only the listeners): those a stop stored, matched with the stored
// description, and those kept one by one for a crash. It returns nil when
// nothing was stored, or p is nil. Clients a stop stored without a
// description are closed, and the error says how many.
func (p *Passed) TakeStored(now time.Time) (*Restored, error) {
	if p == nil || (p.state == nil && len(p.clients) == 0 && len(p.kept) == 0) {
		return nil, nil
	}
	clients, kept, state := p.clients, p.kept, p.state
	p.clients, p.kept, p.state = nil, nil, nil
	var desc *State
	var err error
	if state != nil {
		desc, err = ReadStored(state)
		state.Close()
		if err != nil {
			err = fmt.Errorf("stored description: %w; %d clients stored with it closed", err, len(clients))
		}
	} else if len(clients) > 0 {
		err = fmt.Errorf("%d stored clients came back without their description (FDNAME=%s); closed", len(clients), FDNameState)
	}
	if desc == nil {
		scm.CloseAll(clients)
		r := Restore(nil, nil, kept, now)
		r.Stray += len(clients)
		return r, err
	}
	return Restore(desc, clients, kept, now), nil
}
