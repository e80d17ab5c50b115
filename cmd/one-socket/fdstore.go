package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"

	"github.com/one-socket/one-socket/internal/broker"
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

const (
	// storeVersion is the format of the stored description.
	storeVersion = 1
	// barrierTimeout bounds the wait for systemd to have read the store
	// messages before the process exits.
	barrierTimeout = 5 * time.Second
)

// storedState is the description of the stored clients.
type storedState struct {
	Version int           `json:"version"`
	Saved   time.Time     `json:"saved"`
	Conns   []storedConn  `json:"conns"`
	Counts  storedCounter `json:"counts"`
}

// storedConn is one stored client: the engine's description, and the
// inode of its socket to find its descriptor among those passed back.
type storedConn struct {
	Ino uint64 `json:"ino"`
	broker.HandedConn
}

// storedCounter counts what a stop put in the store, for the next start's
// log line.
type storedCounter struct {
	Clients   int `json:"clients"`
	Listeners int `json:"listeners"`
}

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

	var counts storedCounter
	// A listener this process created goes into the store too, and its
	// file stays: clients that connect during the restart wait in its
	// queue. The service manager's own sockets are not stored again.
	storeListener := func(fd int, name string, sf **socketFile) {
		if fd < 0 || *sf == nil {
			return
		}
		if err := d.notify.Store(name, []int{fd}); err != nil {
			log.Warn("cannot store the listening socket", "fdname", name, "err", err)
			return
		}
		counts.Listeners++
		*sf = nil // kept for the next instance, not removed
	}
	storeListener(st.Listener, fdNameBroker, &d.brokerSock)
	storeListener(ctlFD, fdNameControl, &d.ctlSock)
	d.removeSocket(d.brokerSock)
	d.removeSocket(d.ctlSock)
	d.brokerSock, d.ctlSock = nil, nil

	desc := storedState{Version: storeVersion, Saved: time.Now()}
	var fds []int
	for _, c := range st.Conns {
		var s unix.Stat_t
		if err := unix.Fstat(c.FD, &s); err != nil {
			continue
		}
		desc.Conns = append(desc.Conns, storedConn{Ino: s.Ino, HandedConn: c})
		fds = append(fds, c.FD)
	}
	if len(fds) > 0 {
		desc.Counts = storedCounter{Clients: len(fds), Listeners: counts.Listeners}
		counts.Clients, err = d.storeClients(&desc, fds)
		if err != nil {
			log.Warn("cannot store every client; the rest are disconnected", "stored", counts.Clients, "clients", len(fds), "err", err)
		}
	}
	if max, ok := fdStoreMax(); ok && counts.Clients+counts.Listeners+1 > max {
		log.Warn("more descriptors than FileDescriptorStoreMax=; systemd keeps only the first", "stored", counts.Clients+counts.Listeners+1, "max", max)
	}
	// Exit only once systemd holds them: its copies keep the connections
	// open when this process's copies close.
	if err := d.notify.Barrier(barrierTimeout); err != nil {
		log.Warn("cannot confirm the store", "err", err)
	}
	log.Info("clients stored with the service manager", "clients", counts.Clients, "listeners", counts.Listeners)
}

// storeClients sends the description and then the clients, at most
// scm.MaxFD a message, and returns how many clients were sent.
func (d *instance) storeClients(desc *storedState, fds []int) (int, error) {
	mfd, err := sealedMemfd("one-socket-state", desc)
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

// sealedMemfd returns a memfd holding v as JSON, sealed against change.
func sealedMemfd(name string, v any) (int, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return -1, err
	}
	mfd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	if err := writeAll(mfd, data); err != nil {
		unix.Close(mfd)
		return -1, fmt.Errorf("writing the description: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(mfd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return mfd, nil
}

// restored is what a start took back from the file descriptor store.
type restored struct {
	conns  []broker.HandedConn // matched to their description, ready to serve
	taken  int                 // len(conns) before the engine took them
	lost   int                 // described, but not passed back: hung up meanwhile
	stray  int                 // passed back without a description: closed
	counts storedCounter       // what the previous stop stored
}

// takeStored matches the stored clients that act holds with the stored
// description and takes them out of act, which keeps only the listeners.
// It returns nil when nothing was stored. On error every client is closed,
// and the result says how many: the store must be emptied all the same.
func takeStored(act *activated, now time.Time) (*restored, error) {
	if act == nil || (act.state == nil && len(act.clients) == 0) {
		return nil, nil
	}
	clients, state := act.clients, act.state
	act.clients, act.state = nil, nil
	r := &restored{}
	closeAll := func() {
		for _, fd := range clients {
			unix.Close(fd)
		}
		r.stray = len(clients)
	}
	if state == nil {
		closeAll()
		return r, fmt.Errorf("%d stored clients came back without their description (FDNAME=%s); closed", len(clients), fdNameState)
	}
	desc, err := readStoredState(state)
	state.Close()
	if err != nil {
		closeAll()
		return r, fmt.Errorf("stored description: %w; %d stored clients closed", err, len(clients))
	}
	byIno := make(map[uint64]int, len(clients))
	r.counts = desc.Counts
	for _, fd := range clients {
		var s unix.Stat_t
		if err := unix.Fstat(fd, &s); err != nil || s.Mode&unix.S_IFMT != unix.S_IFSOCK {
			unix.Close(fd)
			r.stray++
			continue
		}
		byIno[s.Ino] = fd
	}
	// Time went on while the daemon was down; waits and deadlines go on
	// with it.
	gap := max(now.Sub(desc.Saved), 0)
	for _, c := range desc.Conns {
		fd, ok := byIno[c.Ino]
		if !ok {
			r.lost++
			continue
		}
		delete(byIno, c.Ino)
		h := c.HandedConn
		h.FD = fd
		h.Since += gap
		r.conns = append(r.conns, h)
	}
	for _, fd := range byIno {
		unix.Close(fd)
		r.stray++
	}
	r.taken = len(r.conns)
	return r, nil
}

// readStoredState reads and checks a stored description.
func readStoredState(f *os.File) (*storedState, error) {
	var desc storedState
	if err := readDescription(f, &desc); err != nil {
		return nil, err
	}
	if desc.Version != storeVersion {
		return nil, fmt.Errorf("version %d, this daemon reads %d", desc.Version, storeVersion)
	}
	if desc.Saved.IsZero() {
		return nil, errors.New("no time of saving")
	}
	return &desc, nil
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
