package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/systemd"
)

// Surviving a crash under systemd (--fdstore): the engine keeps each
// waiting client in the service manager's file descriptor store under a
// name of its own, FDNAME=w<id>, and removes it (FDSTOREREMOVE) when done
// with it; internal/broker's store.go orders the steps. After SIGKILL, a
// panic or the OOM killer, Restart= starts the next instance, which gets
// the stored connections back by name in LISTEN_FDS and reads each
// client's request again: it is still unread in the socket.

// waiterPrefix starts the store name of a waiting client's connection.
const waiterPrefix = "w"

// waiterName is the store name for id.
func waiterName(id uint64) string { return waiterPrefix + strconv.FormatUint(id, 10) }

// waiterID parses a store name that waiterName made.
func waiterID(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, waiterPrefix)
	if !ok || digits == "" || digits[0] == '0' || len(digits) > 20 {
		return 0, false
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	return id, err == nil
}

// crashStore is the engine's broker.ConnStore over the service manager's
// file descriptor store. Only the engine's loop calls Keep and Release,
// one at a time.
type crashStore struct {
	notify *systemd.Notifier
	next   uint64 // the next id; above every id in use
}

// newCrashStore returns a store for the manager n talks to.
func newCrashStore(n *systemd.Notifier) *crashStore {
	return &crashStore{notify: n, next: 1}
}

// above makes new ids start above those of conns, which are stored
// already.
func (s *crashStore) above(conns []broker.HandedConn) {
	for _, c := range conns {
		s.next = max(s.next, c.Stored+1)
	}
}

// Keep stores a copy of fd under a new name and returns its id.
func (s *crashStore) Keep(fd int) (uint64, error) {
	id := s.next
	if err := busy(s.notify.StoreNow(waiterName(id), []int{fd})); err != nil {
		return 0, err
	}
	s.next++
	return id, nil
}

// Release removes the copy stored under id.
func (s *crashStore) Release(id uint64) error {
	return busy(s.notify.StoreRemoveNow(waiterName(id)))
}

// busy makes a full queue at the manager the engine's ErrStoreBusy: it
// calls again later rather than wait in its loop.
func busy(err error) error {
	if errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("%w: %w", broker.ErrStoreBusy, err)
	}
	return err
}

// releaseAll removes the copies of conns, waiting for the manager, and
// forgets their ids, for a program that would never remove them (one
// older than this mechanism).
func (s *crashStore) releaseAll(conns []broker.HandedConn) {
	for i := range conns {
		if id := conns[i].Stored; id != 0 {
			s.notify.StoreRemove(waiterName(id))
			conns[i].Stored = 0
		}
	}
}
