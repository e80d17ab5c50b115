package main

import (
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/handover"
)

// Restart without loss under systemd (--fdstore): what goes into the
// service manager's file descriptor store, under which names, and how a
// start takes it back is internal/handover's (fdstore.go there); here,
// which of the daemon's sockets and clients a stop gives it.

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
		if err := d.store.StoreListener(name, fd); err != nil {
			log.Warn("cannot store the listening socket", "fdname", name, "err", err)
			return
		}
		listeners++
		sock.file = nil // kept for the next instance, not removed
	}
	storeListener(st.Listener, handover.FDNameBroker, &d.sock)
	storeListener(ctlFD, handover.FDNameControl, &d.ctlSock)
	d.removeSockets()

	// Clients kept for a crash are in the store already, under names of
	// their own; the description covers them too. It is stored even with
	// no client, for the counters.
	desc, fds := handover.ForStore(st.Conns, time.Now())
	desc.Counts.Listeners = listeners
	desc.Totals = handover.TotalsOf(d.b.Stats())
	kept := len(desc.Conns) - len(fds)
	sent, err := d.store.StoreClients(desc, fds)
	if err != nil {
		log.Warn("cannot store every client; the rest are disconnected", "stored", sent, "clients", len(fds), "err", err)
	}
	clients := kept + sent
	if max, ok := handover.StoreMax(os.Getenv); ok && clients+listeners+1 > max {
		log.Warn("more descriptors than FileDescriptorStoreMax=; systemd keeps only the first", "stored", clients+listeners+1, "max", max)
	}
	// Exit only once systemd holds them: its copies keep the connections
	// open when this process's copies close.
	if err := d.store.Confirm(); err != nil {
		log.Warn("cannot confirm the store", "err", err)
	}
	log.Info("clients stored with the service manager", "clients", clients, "listeners", listeners)
}
