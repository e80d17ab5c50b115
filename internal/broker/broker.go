// Package broker is the pairing engine of One Socket: it accepts clients on
// a listening Unix socket, reads one GET_PAIR from each, keeps the ones that
// wait in an index keyed by (key, mode), and hands two compatible clients
// the two ends of a fresh socketpair.
//
// The engine runs on one goroutine around one epoll instance and raw
// system calls; see loop.go for why. It knows nothing of flags, files or the
// environment: the daemon configures it through Config.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
)

// DefaultHandshakeTimeout is how long a client may take to send its whole
// GET_PAIR when Config.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 5 * time.Second

// reservedFDs is the number of descriptors kept free for the engine's own
// use (epoll, eventfd, the socketpair being handed out, the spare that
// lets it refuse connections at EMFILE) and the rest of the process.
const reservedFDs = 32

// Config tunes a Broker. A nil *Config means all defaults.
type Config struct {
	// Logger receives start/stop, warnings and, at debug level, per-client
	// events. nil discards everything.
	Logger *slog.Logger

	// HandshakeTimeout bounds the time from accept to a complete GET_PAIR.
	// Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// MaxWaitingPerUID caps the clients one user (by SO_PEERCRED uid) may
	// have waiting at once, so that no user can fill the broker; a request
	// past it is refused at once. Zero means no cap.
	MaxWaitingPerUID int

	// MaxWait bounds how long a client may wait for its peer; past it the
	// client is disconnected. Zero means no bound.
	MaxWait time.Duration

	// Authorizer decides who may ask for which keys; nil allows all. It can
	// be replaced at run time with SetAuthorizer.
	Authorizer Authorizer

	// MaxConns caps open client connections (handshaking plus waiting).
	// Past it, a new connection makes room by shedding the newest
	// handshake of the user holding the most connections, or is closed at
	// once if that user is its own. Zero means the soft RLIMIT_NOFILE
	// minus the descriptors already open and a small reserve.
	MaxConns int

	// MaxConnsPerUID caps the connections of every kind (handshaking or
	// waiting) one user other than root may hold, so that no user can
	// fill the broker with clients that never finish their request. Zero
	// means half of MaxConns; negative means no cap, and no per-user
	// shedding either (which saves reading each client's credentials).
	MaxConnsPerUID int

	// Store, when set, keeps a copy of every waiting client's connection
	// outside the process, so that a process started after a crash can
	// serve it (see store.go). nil keeps nothing.
	Store ConnStore
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("broker: closed")

// Broker is a pairing engine. Create it with New, run it with Serve and stop
// it with Shutdown; Stats may be called from any goroutine.
type Broker struct {
	log       *slog.Logger
	handshake time.Duration
	maxConns  int
	maxPerUID int
	// maxUIDConns caps each user's connections; 0 when users are not
	// told apart (MaxConnsPerUID < 0).
	maxUIDConns int
	maxWait     time.Duration
	auth        atomic.Pointer[Authorizer]
	store       ConnStore

	stats counters

	mu      sync.Mutex
	calls   []func(*loop) // work queued for the loop goroutine
	wakeFD  int           // eventfd that wakes the loop; -1 once closed
	serving bool
	closed  bool
	done    chan struct{}
}

// New returns a Broker configured by cfg (nil for defaults).
func New(cfg *Config) (*Broker, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	b := &Broker{
		log:       cfg.Logger,
		handshake: cfg.HandshakeTimeout,
		maxConns:  cfg.MaxConns,
		maxPerUID: cfg.MaxWaitingPerUID,
		maxWait:   cfg.MaxWait,
		store:     cfg.Store,
		wakeFD:    -1,
		done:      make(chan struct{}),
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.handshake <= 0 {
		b.handshake = DefaultHandshakeTimeout
	}
	if b.maxConns < 0 || b.maxPerUID < 0 || b.maxWait < 0 {
		return nil, fmt.Errorf("broker: negative limit in %+v", *cfg)
	}
	b.SetAuthorizer(cfg.Authorizer)
	if b.maxConns == 0 {
		n, err := DefaultMaxConns()
		if err != nil {
			return nil, err
		}
		b.maxConns = n
	}
	switch {
	case cfg.MaxConnsPerUID > 0:
		b.maxUIDConns = cfg.MaxConnsPerUID
	case cfg.MaxConnsPerUID == 0:
		b.maxUIDConns = max(b.maxConns/2, 1)
	}
	return b, nil
}

// DefaultMaxConns is the connection limit used when Config.MaxConns is zero:
// the soft RLIMIT_NOFILE less the descriptors open now and a reserve.
func DefaultMaxConns() (int, error) { return MaxConnsBesides(0) }

// MaxConnsBesides is DefaultMaxConns for a process that holds inherited
// descriptors it does not count as overhead: those of the clients (and
// sockets) a previous program handed over, so that the limit after a
// restart is the limit before it.
func MaxConnsBesides(inherited int) (int, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, os.NewSyscallError("getrlimit", err)
	}
	open := 0
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		open = len(ents)
	}
	n := int(min(rl.Cur, 1<<30)) - max(open-inherited, 0) - reservedFDs
	if n < 1 {
		return 0, fmt.Errorf("broker: RLIMIT_NOFILE of %d leaves no room for clients", rl.Cur)
	}
	return n, nil
}

// MaxConnsPerUID returns the cap on each user's connections, 0 for none.
func (b *Broker) MaxConnsPerUID() int { return b.maxUIDConns }

// MaxConns returns the connection limit in force.
func (b *Broker) MaxConns() int { return b.maxConns }

// Serve runs the engine on ln until Shutdown, then returns ErrClosed. Serve
// takes ownership of ln: it moves ln's descriptor into the engine and closes
// ln at once (without removing its socket file), so ln must not be used
// afterwards. Serve may be called once.
func (b *Broker) Serve(ln *net.UnixListener) error {
	lfd, err := takeListener(ln)
	if err != nil {
		return err
	}
	return b.serve(lfd, nil)
}

// serve runs the loop on listener lfd, which it owns; before, if not nil,
// runs on the loop first.
func (b *Broker) serve(lfd int, before func(*loop)) error {
	b.mu.Lock()
	if b.serving || b.closed {
		b.mu.Unlock()
		unix.Close(lfd)
		if b.closed {
			return ErrClosed
		}
		return errors.New("broker: Serve called twice")
	}
	b.serving = true
	b.mu.Unlock()
	defer close(b.done)

	l, err := newLoop(b, lfd)
	if err != nil {
		unix.Close(lfd)
		b.markClosed()
		return err
	}
	b.mu.Lock()
	b.wakeFD = l.wakeFD
	b.mu.Unlock()
	b.log.Debug("engine running", "max_conns", b.maxConns, "handshake_timeout", b.handshake)
	if before != nil {
		before(l)
	}
	runErr := l.run()
	b.mu.Lock()
	b.wakeFD = -1
	b.closed = true
	b.mu.Unlock()
	l.drainCalls() // anything posted before wakeFD was cleared
	l.close()
	switch {
	case runErr != nil:
		b.log.Error("engine stopped", "err", runErr)
		return runErr
	case l.handedOver:
		return ErrHandedOver
	}
	return ErrClosed
}

// Shutdown stops accepting, closes every client connection, and waits for
// Serve to return. It is safe to call more than once and from any goroutine.
func (b *Broker) Shutdown() {
	b.mu.Lock()
	b.closed = true
	serving := b.serving
	b.wakeLocked()
	b.mu.Unlock()
	if serving {
		<-b.done
	}
}

func (b *Broker) markClosed() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// post queues fn to run on the loop goroutine and wakes the loop. It
// reports false, dropping fn, when the broker is not serving.
func (b *Broker) post(fn func(*loop)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.wakeFD < 0 {
		return false
	}
	b.calls = append(b.calls, fn)
	b.wakeLocked()
	return true
}

// wakeLocked makes the loop's epoll_wait return. The eventfd is written
// under b.mu so that the loop cannot close it in between.
func (b *Broker) wakeLocked() {
	if b.wakeFD >= 0 {
		one := [8]byte{1}
		unix.Write(b.wakeFD, one[:])
	}
}

// takeCalls returns the queued calls and empties the queue.
func (b *Broker) takeCalls() []func(*loop) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.calls
	b.calls = nil
	return c
}

// takeListener moves ln's descriptor out of ln and the Go runtime's poller:
// the engine polls it itself, and a second registration would cost a
// wake-up of the runtime's poller per connection.
func takeListener(ln *net.UnixListener) (int, error) {
	fd, err := scm.Dup(ln)
	if err != nil {
		return -1, err
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}
