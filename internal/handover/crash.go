package handover

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
)

// Surviving a crash under systemd (--fdstore): the engine keeps each
// waiting client in the service manager's file descriptor store under a
// name of its own, FDNAME=w<id>, and removes it (FDSTOREREMOVE) when done
// with it; internal/broker's store.go orders the steps. After SIGKILL, a
// panic or the OOM killer, Restart= starts the next instance, which gets
// the stored connections back by name in LISTEN_FDS (passed.go) and reads
// each client's request again: it is still unread in the socket.

// waiterPrefix starts the store name of a waiting client's connection.
const waiterPrefix = "w"

// WaiterName is the store name for id.
func WaiterName(id uint64) string { return waiterPrefix + strconv.FormatUint(id, 10) }

// WaiterID parses a store name that WaiterName made.
func WaiterID(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, waiterPrefix)
	if !ok || digits == "" || digits[0] == '0' || len(digits) > 20 {
		return 0, false
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	return id, err == nil
}

// Above makes new ids start above id, which is stored already (0 is
// none).
func (s *FDStore) Above(id uint64) {
	s.next = max(s.next, id+1)
}

// Keep stores a copy of fd under a new name and returns its id; it is the
// engine's broker.ConnStore, and only the engine's loop calls Keep and
// Release, one at a time.
func (s *FDStore) Keep(fd int) (uint64, error) {
	id := s.next
	if err := busy(s.notify.StoreNow(WaiterName(id), []int{fd})); err != nil {
		return 0, err
	}
	s.next++
	return id, nil
}

// Release removes the copy stored under id.
func (s *FDStore) Release(id uint64) error {
	return busy(s.notify.StoreRemoveNow(WaiterName(id)))
}

// busy makes a full queue at the manager the engine's ErrStoreBusy: it
// calls again later rather than wait in its loop.
func busy(err error) error {
	if errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("%w: %w", broker.ErrStoreBusy, err)
	}
	return err
}

// ReleaseAll removes the copies of conns, waiting for the manager, and
// forgets their ids, for a program that would never remove them (one
// older than this mechanism).
func (s *FDStore) ReleaseAll(conns []broker.HandedConn) {
	for i := range conns {
		if id := conns[i].Stored; id != 0 {
			s.notify.StoreRemove(WaiterName(id))
			conns[i].Stored = 0
		}
	}
}
