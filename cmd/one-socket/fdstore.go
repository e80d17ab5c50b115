package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/handover"
	"github.com/one-socket/one-socket/internal/scm"
)

// Restart without loss under systemd. With --fdstore (or $FDSTORE, which
// systemd 254 and later set when FileDescriptorStoreMax= is not zero), a
// stop disconnects nobody: the daemon gives the engine's connections to
// the service manager's file descriptor store (FDSTORE=1, FDNAME=client),
// with a sealed memfd that describes each of them (FDNAME=state) and any
// listening socket the daemon created itself (FDNAME=broker, control).
// systemd keeps them while the service restarts and passes them to the
// next instance with its sockets in LISTEN_FDS; a stop for good closes
// them, which clients see as the broker hanging up, as without the store.
// Stored connections are matched to their description by socket inode, so
// the order systemd passes them in does not matter, and a client that hung
// up meanwhile (systemd drops it from the store) is simply missing.

// barrierTimeout bounds the wait for systemd to have read the store
// messages before the process exits.
const barrierTimeout = 5 * time.Second

// fdStoreWanted reports whether stops should use the store: --fdstore, or
// a positive $FDSTORE.
func fdStoreWanted(flag bool, getenv func(string) string) bool {
	if flag {
		return true
	}
	n, err := strconv.Atoi(getenv("FDSTORE"))
	return err == nil && n > 0
}

// stopIntoStore is shutdown for a daemon that keeps its clients in the
// file descriptor store. Whatever cannot be stored is closed, as a plain
// stop would.
func (d *instance) stopIntoStore() {
	log := d.log
	defer d.stopMetrics()
	st, ctlFD, err := d.handOver()
	if err != nil {
		log.Warn("cannot hand the clients to the service manager; disconnecting them", "err", err)
		d.shutdown()
		return
	}
	defer func() {
		st.Close()
		if ctlFD >= 0 {
			unix.Close(ctlFD)
		}
	}()

	listeners := 0
	// A listener this process created goes into the store too, and its
	// file stays: clients that connect during the restart wait in its
	// queue. The service manager's own sockets are not stored again.
	storeListener := func(fd int, name string, sock *socket) {
		if fd < 0 || sock.file == nil {
			return
		}
		if err := d.notify.Store(name, []int{fd}); err != nil {
			log.Warn("cannot store the listening socket", "fdname", name, "err", err)
			return
		}
		listeners++
		sock.file = nil // kept for the next instance, not removed
	}
	storeListener(st.Listener, fdNameBroker, &d.sock)
	storeListener(ctlFD, fdNameControl, &d.ctlSock)
	d.removeSockets()

	// Clients kept for a crash are in the store already, under names of
	// their own; the description covers them too. It is stored even with
	// no client, for the counters.
	desc, fds := handover.ForStore(st.Conns, time.Now())
	desc.Counts.Listeners = listeners
	desc.Totals = handover.TotalsOf(d.b.Stats())
	kept := len(desc.Conns) - len(fds)
	sent, err := d.storeClients(desc, fds)
	if err != nil {
		log.Warn("cannot store every client; the rest are disconnected", "stored", sent, "clients", len(fds), "err", err)
	}
	clients := kept + sent
	if max, ok := fdStoreMax(); ok && clients+listeners+1 > max {
		log.Warn("more descriptors than FileDescriptorStoreMax=; systemd keeps only the first", "stored", clients+listeners+1, "max", max)
	}
	// Exit only once systemd holds them: its copies keep the connections
	// open when this process's copies close.
	if err := d.notify.Barrier(barrierTimeout); err != nil {
		log.Warn("cannot confirm the store", "err", err)
	}
	log.Info("clients stored with the service manager", "clients", clients, "listeners", listeners)
}

// storeClients sends the description and then the clients, at most
// scm.MaxFD a message, and returns how many clients were sent.
func (d *instance) storeClients(desc *handover.State, fds []int) (int, error) {
	mfd, err := desc.Memfd("one-socket-state", true)
	if err != nil {
		return 0, err
	}
	defer unix.Close(mfd)
	// Replace any description an earlier stop left, then add this one.
	if err := d.notify.StoreRemove(fdNameState); err != nil {
		return 0, err
	}
	if err := d.notify.Store(fdNameState, []int{mfd}); err != nil {
		return 0, err
	}
	sent := 0
	for sent < len(fds) {
		batch := fds[sent:min(sent+scm.MaxFD, len(fds))]
		if err := d.notify.Store(fdNameClient, batch); err != nil {
			return sent, err
		}
		sent += len(batch)
	}
	return sent, nil
}

// fdStoreMax returns systemd's $FDSTORE, the store's size, when it is set.
func fdStoreMax() (int, bool) {
	n, err := strconv.Atoi(os.Getenv("FDSTORE"))
	return n, err == nil && n > 0
}

// takeStored takes the clients that act holds from the store out of it
// (act keeps only the listeners): those a stop stored, matched with the
// stored description, and those kept one by one for a crash. It returns
// nil when nothing was stored. Clients a stop stored without a
// description are closed, and the error says how many.
func takeStored(act *activated, now time.Time) (*handover.Restored, error) {
	if act == nil || (act.state == nil && len(act.clients) == 0 && len(act.kept) == 0) {
		return nil, nil
	}
	clients, kept, state := act.clients, act.kept, act.state
	act.clients, act.kept, act.state = nil, nil, nil
	var desc *handover.State
	var err error
	if state != nil {
		desc, err = handover.ReadStored(state)
		state.Close()
		if err != nil {
			err = fmt.Errorf("stored description: %w; %d clients stored with it closed", err, len(clients))
		}
	} else if len(clients) > 0 {
		err = fmt.Errorf("%d stored clients came back without their description (FDNAME=%s); closed", len(clients), fdNameState)
	}
	if desc == nil {
		scm.CloseAll(clients)
		r := handover.Restore(nil, nil, kept, now)
		r.Stray += len(clients)
		return r, err
	}
	return handover.Restore(desc, clients, kept, now), nil
}

// forgetStored empties the store of the clients and description this
// start took back, once it serves them: the service manager's copies would
// otherwise keep every one of those connections open.
func (d *instance) forgetStored() {
	for _, name := range []string{fdNameClient, fdNameState} {
		if err := d.notify.StoreRemove(name); err != nil {
			d.notifyFailed(err)
		}
	}
}
