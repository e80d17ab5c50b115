package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/handover"
)

// Restart without loss: on SIGUSR2 or the control command "upgrade" the
// daemon hands its broker over (internal/broker's Handover), describes the
// state in a memfd (internal/handover), and re-executes the binary at the
// path it was started from, in the same process; the new program finds
// the memfd in $ONE_SOCKET_HANDOVER and serves the same sockets and
// clients.

// versionCheckTimeout bounds the run of the new binary's check.
const versionCheckTimeout = 5 * time.Second

// describeSocket is sock as the hand-over describes it.
func describeSocket(sock socket) handover.Socket {
	sf := sock.file
	if sf == nil {
		return handover.Socket{Path: sock.path}
	}
	return handover.Socket{Path: sock.path, Created: true, Abstract: sf.abstract, Dev: sf.dev, Ino: sf.ino}
}

// handedSocket is the socket a hand-over describes.
func handedSocket(h handover.Socket) socket {
	if !h.Created {
		return socket{path: h.Path}
	}
	return socket{path: h.Path, file: &socketFile{path: h.Path, abstract: h.Abstract, dev: h.Dev, ino: h.Ino}}
}

// executablePath resolves argv0 as it was invoked to an absolute path: an
// upgrade runs whatever binary is at that path then.
func executablePath(argv0 string) (string, error) {
	p, err := exec.LookPath(argv0)
	if err != nil {
		return "", err
	}
	return filepath.Abs(p)
}

// checkUpgrade says whether an upgrade may begin: the new binary must read
// this format, and the policy file must load, since the new program reads
// it afresh and could not start the clients without it.
func (d *instance) checkUpgrade(trigger string) error {
	err := handover.CheckProgram(d.exe, versionCheckTimeout)
	if err == nil && d.policy.path != "" {
		if _, _, perr := d.policy.load(); perr != nil {
			err = fmt.Errorf("the policy does not load, and the new program would have to: %w", perr)
		}
	}
	if err == nil {
		err = d.checkNewConfig()
	}
	if err != nil {
		d.log.Warn("upgrade refused", "trigger", trigger, "err", err)
		return fmt.Errorf("upgrade refused: %w", err)
	}
	return nil
}

// requestUpgrade is the control command's Upgrade: it checks the binary and
// asks the serve loop to upgrade; the loop runs after the reply is sent.
func (d *instance) requestUpgrade() error {
	if err := d.checkUpgrade("control"); err != nil {
		return err
	}
	select {
	case d.upgradeReq <- struct{}{}:
	default: // one is already on its way
	}
	return nil
}

// upgrade hands the broker over and re-executes the binary. It returns
// only when it failed; then the daemon serves on as before.
func (d *instance) upgrade(trigger string, checked bool) error {
	log := d.log
	if !checked {
		if err := d.checkUpgrade(trigger); err != nil {
			return err
		}
	}
	log.Info("upgrading", "trigger", trigger, "exe", d.exe)
	if err := d.notify.Reloading(); err != nil {
		d.notifyFailed(err)
	}
	st, ctlFD, err := d.handOver()
	if err != nil {
		log.Warn("upgrade failed", "err", err)
		d.ready()
		return err
	}
	if d.legacyTarget && d.store != nil {
		// A program older than crash survival would never remove them,
		// and the store's copies would hold every client open.
		d.store.ReleaseAll(st.Conns)
	}
	stored := d.store != nil && d.storeForUpgrade(st)
	err = d.exec(st, ctlFD)
	// Still here: serve the State again in this process.
	if stored {
		handover.ForgetStored(d.notify, nil, d.notifyFailed)
	}
	if rerr := d.resume(st, ctlFD); rerr != nil {
		log.Error("cannot resume after the failed upgrade", "err", rerr, "upgrade_err", err)
		return errors.Join(err, rerr)
	}
	d.ready()
	log.Warn("upgrade failed; serving on", "err", err)
	return err
}

// storeForUpgrade puts copies of the clients in the service manager's
// file descriptor store before the exec, so that a new program that dies
// outright before it serves loses nothing: the manager restarts the
// service (Restart=on-failure) and the next instance takes them back. The
// new program empties the store as it begins to serve. It reports whether
// the clients were stored.
func (d *instance) storeForUpgrade(st *broker.State) bool {
	desc, fds := handover.ForStore(st.Conns, time.Now())
	desc.Totals = handover.TotalsOf(d.b.Stats())
	if len(fds) == 0 {
		return false
	}
	n, err := d.store.StoreClients(desc, fds)
	if err == nil {
		err = d.store.Confirm()
	}
	if err != nil {
		d.log.Warn("cannot keep the clients in the service manager's store during the upgrade", "stored", n, "clients", len(fds), "err", err)
	}
	return n > 0
}

// handOver stops the engine and the control server without closing what
// they serve: it returns the engine's State and a duplicate of the control
// listener (-1 without one), all owned by the caller.
func (d *instance) handOver() (*broker.State, int, error) {
	st, err := d.b.Handover()
	if err != nil {
		return nil, -1, err
	}
	if d.served != nil {
		<-d.served
		d.served = nil
	}
	ctlFD, err := d.ctl.dup()
	if err != nil {
		d.log.Warn("cannot keep the control socket", "err", err)
		ctlFD = -1
	}
	d.ctl.close()
	return st, ctlFD, nil
}

// exec writes the description and re-executes; it returns only on error.
func (d *instance) exec(st *broker.State, ctlFD int) error {
	h := &handover.State{
		Version: handover.Version,
		Process: &handover.Process{
			Exe:       d.exe,
			Listener:  st.Listener,
			Control:   ctlFD,
			PidFile:   -1,
			Socket:    describeSocket(d.sock),
			CtlSocket: describeSocket(d.ctlSock),
			Activated: d.activated,
			Started:   d.started,
			LogLevel:  d.level.Level().String(),
			LogFile:   d.cfg.logFile,
		},
	}
	if d.pidf != nil && d.pidf.f != nil {
		h.PidFile = int(d.pidf.f.Fd())
		h.PidPath = d.pidf.path
	}
	for _, c := range st.Conns {
		h.Conns = append(h.Conns, handover.FromEngine(c))
	}
	if !d.legacyTarget {
		// A binary before 0.2.0 refuses a field it does not know.
		h.Totals = handover.TotalsOf(d.b.Stats())
	}
	// The new program gives the clients back to this binary, by its
	// descriptor, if it cannot serve them.
	self, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening this binary for a fallback: %w", os.NewSyscallError("open", err))
	}
	defer unix.Close(self)
	env := append(handover.WithoutEnv(os.Environ(), handover.EnvFallback, handover.EnvFallbackArgs, handover.EnvFailed, "NOTIFY_SOCKET", handover.EnvKeeper, envMaxConns),
		handover.FallbackEnv(self, os.Args)...)
	env = append(env, maxConnsEnv(d.b.MaxConns()))
	// Unset at start; the new program needs it for READY=1.
	env = append(env, d.notify.Env()...)
	keep := []int{self}
	// Without a file descriptor store, a keeper covers a new program that
	// dies outright; not one older than the keeper, which would never
	// release it (and the keeper's copies would hold every client open).
	if d.store == nil && !d.legacyTarget {
		if k, err := handover.StartKeeper(h, os.Args, d.notify.Env()); err != nil {
			// The upgrade goes on without one.
			d.log.Warn("no keeper for the upgrade", "err", err)
		} else {
			defer handover.ReleaseKeeper(k) // only reached if the exec failed
			env = append(env, handover.EnvKeeper+"="+strconv.Itoa(k))
			keep = append(keep, k)
		}
	}
	return handover.Exec(h, d.exe, -1, os.Args, env, keep...)
}

// checkNewConfig asks the new binary whether it would start with this
// daemon's flags (policy and log file included) before anything is handed
// over. A binary older than the check cannot say, and is let through on
// its version alone; it gets no keeper and only v0.1.0's format.
func (d *instance) checkNewConfig() error {
	legacy, err := handover.CheckConfig(d.exe, os.Args[1:], versionCheckTimeout)
	d.legacyTarget = legacy
	if legacy {
		d.log.Warn("the new binary cannot check its configuration before the upgrade (it is older than this one)", "exe", d.exe)
	}
	return err
}

// resume serves st (and the control socket on ctlFD, if not -1) with a new
// broker, as adopt does after an exec, with the policy in force.
func (d *instance) resume(st *broker.State, ctlFD int) error {
	b, err := broker.New(d.brokerConfig())
	if err == nil {
		b.Carry(d.b.Stats())
	}
	if err != nil {
		st.Close()
		if ctlFD >= 0 {
			unix.Close(ctlFD)
		}
		return err
	}
	d.b = b
	d.served = make(chan error, 1)
	go func() { d.served <- b.ServeState(st) }()
	if ctlFD >= 0 {
		ln, err := fileListener(ctlFD, "control")
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		d.ctl.ln = ln
		d.startControl()
	}
	return nil
}

// fileListener makes a listener of fd, taking ownership of it.
func fileListener(fd int, name string) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("descriptor %d is not a Unix socket listener", fd)
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// brokerConfig is the broker's configuration, with the policy in force.
func (d *instance) brokerConfig() *broker.Config {
	c := d.bcfg
	c.Authorizer = d.policy.authorizer()
	return &c
}

// adopt is run's second half after an upgrade: it serves what the previous
// program handed over instead of creating sockets and the pid file.
func (d *instance) adopt(sigs, hups, usr2 chan os.Signal, nofile uint64) int {
	boot := d.boot
	h := boot.ho
	d.boot = nil
	d.activated = h.Activated
	d.sock, d.ctlSock = handedSocket(h.Socket), handedSocket(h.CtlSocket)
	if h.PidFile >= 0 {
		d.pidf = &pidFile{path: h.PidPath, f: os.NewFile(uintptr(h.PidFile), h.PidPath)}
	}
	if h.Control >= 0 {
		ln, err := fileListener(h.Control, "control")
		if err != nil {
			d.log.Warn("cannot serve the inherited control socket", "err", err)
		} else {
			d.ctl.ln = ln
		}
	}
	st := &broker.State{Listener: h.Listener}
	for _, c := range h.Conns {
		st.Conns = append(st.Conns, c.Engine(c.FD))
	}
	// Served from now on: nothing is given back any more, and what the
	// previous program kept in the service manager's store for a crash
	// of this one is not needed.
	boot.ho = nil
	if d.store != nil {
		handover.ForgetStored(d.notify, nil, d.notifyFailed)
	}
	handover.ReleaseKeeper(boot.keeper)
	if d.pidf != nil && d.pidf.f != nil {
		// After a keeper took over, the pid is the keeper's.
		if err := d.pidf.write(os.Getpid()); err != nil {
			d.log.Warn("cannot update the pid file", "pidfile", d.pidf.path, "err", err)
		}
	}
	if boot.fallback.FD >= 0 {
		unix.Close(boot.fallback.FD)
	}
	d.b.Carry(h.Totals.Stats())
	d.b.CountUpgrade()
	d.served = make(chan error, 1)
	go func() { d.served <- d.b.ServeState(st) }()
	d.started = h.Started
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(h.LogLevel)); err == nil {
		d.level.Set(lvl)
	}
	d.startControl()
	waiting, kept := 0, 0
	for _, c := range h.Conns {
		if c.Waiting {
			waiting++
		}
		if c.Stored != 0 {
			kept++
		}
	}
	d.log.Info("upgraded", "clients", len(h.Conns), "waiting", waiting, "kept", kept,
		"counters", carried(h.Totals != nil), "policy", d.policy.current(),
		"pid", os.Getpid(), "version", versionString(), "socket", d.sock.path, "nofile", nofile)
	d.ready()
	return d.serve(sigs, hups, usr2)
}

// carried says in a log line whether the counters came over from the
// previous program ("carried") or start again at zero ("zeroed").
func carried(yes bool) string {
	if yes {
		return "carried"
	}
	return "zeroed"
}
