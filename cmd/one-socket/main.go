// Command one-socket is the SocketPair Broker daemon. It listens on one
// Unix stream socket and gives two clients that send a GET_PAIR with the
// same key and compatible modes the two ends of a fresh socketpair.
//
// This package is the daemon's shell: flags and environment (flags.go),
// socket files (listen.go), which passed socket is which (activation.go),
// --detach (detach.go), --pidfile (pidfile.go), --log-file (logfile.go),
// the control socket (control.go), process limits (runtime.go), the
// upgrade by re-exec in place (upgrade.go), the file descriptor store
// (fdstore.go), and the start-up, signals and shutdown that tie them
// together (here). The pairing is internal/broker's, the service
// manager's protocols internal/systemd's.
//
// See doc/one-socket.md and one-socket(8) for the operation guide.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/paths"
	"github.com/one-socket/one-socket/internal/scm"
	"github.com/one-socket/one-socket/internal/systemd"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole daemon; it returns the exit status: 0 after a clean
// stop (by signal or by the control socket's stop command), for --help and
// --version, and for --detach once the daemon listens; 2 for a bad command
// line; 1 for anything that kept the broker from starting or running.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == handoverFlag {
		// Hidden: the upgrade asks the new binary which handover it reads.
		fmt.Fprintln(stdout, handoverVersion)
		return 0
	}
	cfg, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if cfg.version {
		fmt.Fprintf(stdout, "one-socket %s\n", versionString())
		return 0
	}

	// What the environment hands over is taken, and the variables unset,
	// first of all: nothing this process starts may inherit them.
	report, err := takeStartReport()
	if err != nil {
		fmt.Fprintf(stderr, "one-socket: %v\n", err)
		return 1
	}
	ho, err := takeHandover()
	if err != nil {
		fmt.Fprintf(stderr, "one-socket: cannot take over: %v\n", err)
		return 1
	}
	act, actErr := takeActivated(os.Getpid())
	notify, notifyErr := systemd.NewNotifier()

	if cfg.detach && report == nil && ho == nil {
		if act != nil || actErr != nil {
			act.close()
			fmt.Fprintln(stderr, "one-socket: --detach cannot be used with socket activation: the service manager runs the daemon")
			return 1
		}
		return detach(args, stderr)
	}

	d := &instance{cfg: cfg, act: act, notify: notify, report: report, level: new(slog.LevelVar), ho: ho}
	if ho != nil {
		d.exe = ho.Exe
	} else if d.exe, err = executablePath(os.Args[0]); err != nil {
		d.exeErr = err
	}
	d.level.Set(cfg.logLevel)
	return d.run(stderr, actErr, notifyErr)
}

// instance is a broker with everything the process set up around it, so
// that the start-up can fail at any step and one place undoes what was
// done.
type instance struct {
	cfg    *config
	act    *activated        // sockets from the service manager, or nil
	notify *systemd.Notifier // the service manager's notify socket, or nil
	report *startReport      // the pipe to a --detach parent, or nil
	level  *slog.LevelVar
	policy policyState // --policy and the summary of the policy in force
	log    *slog.Logger
	logf   *logFile // --log-file, or nil

	pidf       *pidFile
	b          *broker.Broker
	brokerPath string
	brokerSock *socketFile       // nil when activated: systemd owns the file
	ctlPath    string            // "" without a control socket
	ctlSock    *socketFile       // nil when activated or disabled
	ctlLn      *net.UnixListener // the control socket until startControl
	ctl        *control.Server
	served     chan error // the broker's Serve result
	ctlServed  chan error // the control server's, nil without one
	stopReq    chan struct{}
	started    time.Time

	exe         string // the binary an upgrade runs, as invoked
	exeErr      error
	ho          *handover // what the previous program handed over, or nil
	activated   bool      // the broker socket came from the service manager
	bcfg        broker.Config
	ctlListener *net.UnixListener // the control server's, kept for an upgrade
	upgradeReq  chan struct{}

	fdstore  bool      // stops hand the clients to the service manager's store
	restored *restored // what this start took back from that store, or nil
}

// run starts the daemon, serves until a stop, and returns the exit status.
func (d *instance) run(stderr io.Writer, actErr, notifyErr error) int {
	cfg := d.cfg
	var pathErr error
	if d.ho != nil {
		d.brokerPath, d.ctlPath = d.ho.Socket.Path, d.ho.CtlSocket.Path
		cfg.logFile = d.ho.LogFile
	} else {
		pathErr = d.settlePaths()
	}

	// The log first, so that every later failure is logged where the
	// operator asked; errors found so far are reported once it exists.
	var logw io.Writer = stderr
	if cfg.logFile != "" {
		lf, err := openLogFile(cfg.logFile, d.report != nil)
		if err != nil {
			return d.fail(slog.New(slog.NewTextHandler(stderr, nil)), err)
		}
		d.logf, logw = lf, lf
	}
	d.log = slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: d.level}))
	log := d.log
	for _, err := range []error{actErr, pathErr} {
		if err != nil {
			return d.fail(log, err)
		}
	}
	if d.exeErr != nil {
		log.Warn("cannot resolve the daemon's binary: upgrades are disabled", "argv0", os.Args[0], "err", d.exeErr)
	}
	if notifyErr != nil {
		// The broker works without it; a manager waiting for READY=1 will
		// say so, and this line says why.
		log.Warn("cannot notify the service manager", "err", notifyErr)
	}
	if d.fdstore = fdStoreWanted(cfg.fdstore, os.Getenv); d.fdstore && d.notify == nil {
		log.Warn("--fdstore needs a service manager (NOTIFY_SOCKET): a stop will disconnect the waiting clients")
		d.fdstore = false
	}
	var storeErr error
	if d.restored, storeErr = takeStored(d.act, time.Now()); storeErr != nil {
		log.Warn("cannot take back the stored clients", "err", storeErr)
	}
	if d.act != nil && d.act.broker != nil && cfg.socket != "" && cfg.socket != d.brokerPath {
		log.Warn("--socket ignored: the service manager passed the broker socket", "socket", d.brokerPath)
	}

	setGOMAXPROCS()
	nofile, err := raiseNoFile()
	if err != nil {
		log.Warn("cannot raise the descriptor limit", "limit", nofile, "err", err)
	}
	// The policy before anything is created: a daemon that cannot apply
	// the policy it was given must not start without it.
	var auth broker.Authorizer
	if cfg.policy != "" {
		d.policy.path = cfg.policy
		a, summary, err := d.policy.load()
		if err != nil {
			return d.fail(log, fmt.Errorf("policy: %w", err), "policy", cfg.policy)
		}
		auth = a
		d.policy.summary.Store(&summary)
	}
	brokerActivated := d.act != nil && d.act.broker != nil
	gid := -1
	if cfg.socketGroup != "" {
		switch {
		case brokerActivated:
			log.Warn("--socket-group ignored: the service manager passed the broker socket", "socket", d.brokerPath)
		case isAbstract(d.brokerPath):
			return d.fail(log, errors.New("--socket-group cannot be used with an abstract socket, which has no file"), "socket", d.brokerPath)
		default:
			if gid, err = lookupSocketGroup(cfg.socketGroup); err != nil {
				return d.fail(log, err)
			}
		}
	}
	d.bcfg = broker.Config{
		Logger:           log,
		HandshakeTimeout: cfg.handshakeTimeout,
		MaxConns:         cfg.maxConns,
		MaxWaitingPerUID: cfg.maxWaitingPerUID,
		MaxWait:          cfg.maxWait,
		Authorizer:       auth,
	}
	d.b, err = broker.New(d.brokerConfig())
	if err != nil {
		return d.fail(log, err)
	}

	// Signals are caught before any file exists, so that none arriving in
	// between can kill the process and leave a file behind. SIGHUP has a
	// channel of its own: it stays caught after a stop begins, when
	// SIGINT and SIGTERM no longer are.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	d.upgradeReq = make(chan struct{}, 1)
	if d.ho != nil {
		return d.adopt(sigs, hups, usr2, nofile)
	}
	d.activated = brokerActivated

	// The pid file before the sockets: a second daemon with the same pid
	// file must not touch them.
	if cfg.pidFile != "" {
		if d.pidf, err = createPidFile(cfg.pidFile); err != nil {
			return d.fail(log, err)
		}
	}
	// The control socket is made before the broker socket, so that once
	// the broker socket accepts, everything does. The broker's path is
	// checked first all the same: a second daemon is told about the broker
	// that runs there, not about its control socket.
	if !brokerActivated && !isAbstract(d.brokerPath) {
		if err := clearPath(d.brokerPath, log); err != nil {
			return d.fail(log, err, "socket", d.brokerPath)
		}
	}
	if d.act != nil && d.act.control != nil {
		d.ctlLn, d.act.control = d.act.control, nil
	} else if d.ctlPath != "" {
		if d.ctlLn, d.ctlSock, err = listen(d.ctlPath, ctlSocketMode, -1, log); err != nil {
			return d.fail(log, fmt.Errorf("control socket: %w", err), "ctl_socket", d.ctlPath)
		}
	}
	var ln *net.UnixListener
	if brokerActivated {
		ln, d.act.broker = d.act.broker, nil
	} else if ln, d.brokerSock, err = listen(d.brokerPath, cfg.socketMode, gid, log); err != nil {
		return d.fail(log, err, "socket", d.brokerPath)
	}
	if err := d.startEngine(ln); err != nil {
		return d.fail(log, err)
	}

	d.started = time.Now()
	d.stopReq = make(chan struct{}, 1)
	d.startControl()

	d.logStarted(nofile)
	d.report.ok()
	d.ready()
	if r := d.restored; r != nil {
		d.forgetStored()
		log.Info("clients taken back from the service manager", "clients", r.taken,
			"stored", r.counts.Clients, "hung_up", r.lost, "unknown", r.stray)
		d.restored = nil
	}
	return d.serve(sigs, hups, usr2)
}

// startEngine runs the broker on ln, with the clients taken back from the
// file descriptor store if there are any.
func (d *instance) startEngine(ln *net.UnixListener) error {
	d.served = make(chan error, 1)
	if d.restored == nil || len(d.restored.conns) == 0 {
		go func() { d.served <- d.b.Serve(ln) }()
		return nil
	}
	lfd, err := scm.Dup(ln)
	ln.Close()
	if err != nil {
		d.served = nil
		return fmt.Errorf("broker socket: %w", err)
	}
	st := &broker.State{Listener: lfd, Conns: d.restored.conns}
	d.restored.conns = nil // the engine owns them now
	go func() { d.served <- d.b.ServeState(st) }()
	return nil
}

// settlePaths decides where the broker and control sockets are, before
// anything is opened: a detached daemon makes every path absolute and
// leaves its working directory.
func (d *instance) settlePaths() error {
	cfg := d.cfg
	var err error
	if d.act != nil && d.act.broker != nil {
		d.brokerPath = listenerPath(d.act.broker)
	} else if d.brokerPath, err = paths.BrokerSocket(cfg.socket, os.Getenv, os.Geteuid()); err != nil {
		return err
	}
	switch {
	case d.act != nil && d.act.control != nil:
		d.ctlPath = listenerPath(d.act.control)
	case d.act != nil:
		// Under socket activation the sockets are the service manager's to
		// create: a control socket it did not pass is made only when named.
		d.ctlPath = ctlSocketPath(cfg, "", os.Getenv)
	default:
		d.ctlPath = ctlSocketPath(cfg, d.brokerPath, os.Getenv)
	}
	if d.report != nil {
		return detachPaths(&d.brokerPath, &d.ctlPath, &cfg.pidFile, &cfg.logFile)
	}
	return nil
}

// serve waits for a reason to stop, stops, and returns the exit status.
func (d *instance) serve(sigs, hups, usr2 chan os.Signal) int {
	log := d.log
	status := 0
	var why any
	for why == nil {
		select {
		case sig := <-sigs:
			why = sig.String()
		case <-d.stopReq:
			why = "stop command"
		case <-usr2:
			d.upgrade("SIGUSR2", false)
		case <-d.upgradeReq:
			d.upgrade("control", true)
		case <-hups:
			d.reopenLog()
			if d.policy.path != "" {
				d.reloadPolicy("SIGHUP")
			}
		case err := <-d.ctlServed:
			// The broker goes on without its control socket.
			d.ctlServed = nil
			log.Warn("control socket failed", "ctl_socket", d.ctlPath, "err", err)
		case err := <-d.served:
			// Serve returns on its own only when the engine failed.
			d.served = nil
			why, status = err.Error(), 1
			log.Error("broker failed", "err", err)
		}
	}
	// A second SIGINT or SIGTERM now takes its default action, so an
	// operator can still kill a broker whose stop hangs.
	signal.Stop(sigs)
	d.notify.Stopping(d.notifyFailed)
	if d.fdstore {
		d.stopIntoStore()
	} else {
		d.shutdown()
	}

	s := d.b.Stats()
	var protoErrs uint64
	for _, n := range s.ProtocolErrors {
		protoErrs += n
	}
	log.Info("one-socket stopped", "reason", why,
		"accepted", s.Accepted, "paired", s.Paired, "refused", s.Refused,
		"timed_out", s.TimedOut, "vanished", s.Vanished, "protocol_errors", protoErrs,
		"denied", s.Denied, "over_quota", s.OverQuota, "expired", s.Expired)
	d.removePidFile()
	return status
}

// shutdown stops the broker and the control server and removes the socket
// files this process created.
func (d *instance) shutdown() {
	// Remove the files before closing the listeners: while a listener is
	// open no other broker can take its path for stale, so the file checked
	// is ours; new clients then find no socket at all rather than one that
	// refuses them.
	d.removeSocket(d.brokerSock)
	d.removeSocket(d.ctlSock)
	d.brokerSock, d.ctlSock = nil, nil
	d.b.Shutdown()
	if d.served != nil {
		<-d.served
	}
	if d.ctl != nil {
		d.ctl.Close()
		if d.ctlServed != nil {
			<-d.ctlServed
		}
	}
}

// fail undoes a start-up that failed with err, reports err (to the log,
// the --detach parent and the service manager) and returns the exit
// status 1. args are added to the log line.
func (d *instance) fail(log *slog.Logger, err error, args ...any) int {
	d.log = log
	log.Error("cannot start", append(args, "err", err)...)
	if d.served != nil {
		d.shutdown()
	} else {
		d.removeSocket(d.brokerSock)
		d.removeSocket(d.ctlSock)
	}
	d.act.close()
	if d.restored != nil {
		// Still in the service manager's store: only these copies go.
		(&broker.State{Listener: -1, Conns: d.restored.conns}).Close()
		d.restored = nil
	}
	if d.ctlLn != nil {
		d.ctlLn.Close()
	}
	d.removePidFile()
	d.report.fail(fmt.Errorf("cannot start: %w", err))
	if serr := d.notify.Notify("STATUS=cannot start: " + err.Error()); serr != nil {
		log.Warn("cannot notify the service manager", "err", serr)
	}
	return 1
}

// logStarted writes the start line.
func (d *instance) logStarted(nofile uint64) {
	args := []any{"socket", d.brokerPath}
	if d.brokerSock != nil && !d.brokerSock.abstract {
		args = append(args, "mode", fmt.Sprintf("%04o", uint32(d.cfg.socketMode)))
		if d.cfg.socketGroup != "" {
			args = append(args, "group", d.cfg.socketGroup)
		}
	}
	if d.ctl != nil {
		args = append(args, "ctl_socket", d.ctlPath)
	}
	if d.brokerSock == nil {
		args = append(args, "activated", true)
	}
	if d.pidf != nil {
		args = append(args, "pidfile", d.pidf.path)
	}
	args = append(args, "policy", d.policy.current())
	if d.cfg.maxWaitingPerUID > 0 {
		args = append(args, "max_waiting_per_uid", d.cfg.maxWaitingPerUID)
	}
	if d.cfg.maxWait > 0 {
		args = append(args, "max_wait", d.cfg.maxWait)
	}
	args = append(args, "max_conns", d.b.MaxConns(), "nofile", nofile,
		"handshake_timeout", d.cfg.handshakeTimeout, "pid", os.Getpid(), "version", versionString())
	d.log.Info("one-socket started", args...)
}

// reopenLog handles SIGHUP's first part: it reopens --log-file, which
// logrotate has just renamed; without --log-file there is nothing to do.
func (d *instance) reopenLog() {
	if d.logf == nil {
		if d.policy.path == "" {
			d.log.Debug("SIGHUP ignored: there is no --log-file to reopen")
		}
		return
	}
	if err := d.logf.Reopen(); err != nil {
		d.log.Warn("cannot reopen the log file; still writing to the old one", "log_file", d.logf.path, "err", err)
		return
	}
	d.log.Info("log file reopened", "log_file", d.logf.path)
}

// requestStop starts the same graceful stop as SIGTERM; the control
// socket's stop command calls it. It does not wait for the stop.
func (d *instance) requestStop() {
	select {
	case d.stopReq <- struct{}{}:
	default: // a stop is already on its way
	}
}

// removeSocket removes a socket file if it is still ours, and warns if it
// cannot or if somebody replaced it. A nil sock does nothing.
func (d *instance) removeSocket(sock *socketFile) {
	if sock == nil {
		return
	}
	ok, err := sock.remove()
	switch {
	case err != nil:
		d.log.Warn("cannot remove the socket file", "socket", sock.path, "err", err)
	case !ok:
		d.log.Warn("socket file was removed or replaced by someone else; leaving the path alone", "socket", sock.path)
	}
}

// removePidFile removes the pid file, if any, warning when it cannot.
func (d *instance) removePidFile() {
	if err := d.pidf.remove(); err != nil {
		d.log.Warn("cannot remove the pid file", "pidfile", d.pidf.path, "err", err)
	}
	d.pidf = nil
}

// statusInterval is how often the daemon refreshes the STATUS= line that
// `systemctl status` shows, when the counters changed.
const statusInterval = 2 * time.Second

// ready tells the service manager that the daemon serves, and keeps the
// status line it shows up to date.
func (d *instance) ready() {
	d.notify.Ready(func() string {
		s := d.b.Stats()
		return fmt.Sprintf("waiting %d, paired %d, conns %d", s.Waiting, s.Paired, s.Conns)
	}, statusInterval, d.notifyFailed)
}

// notifyFailed logs a message the service manager did not get.
func (d *instance) notifyFailed(err error) {
	d.log.Warn("cannot notify the service manager", "err", err)
}
