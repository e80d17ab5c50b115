// Command one-socket is the SocketPair Broker daemon. It listens on one
// Unix stream socket and gives two clients that send a GET_PAIR with the
// same key and compatible modes the two ends of a fresh socketpair.
//
// This package is the daemon's shell: flags and environment (flags.go),
// socket files (listen.go), --detach (detach.go), --pidfile (pidfile.go),
// --log-file (logfile.go), the control socket (control.go), process
// limits (limits.go), the version (version.go), the upgrade by re-exec in
// place (upgrade.go), what a stop gives the file descriptor store
// (fdstore.go), and the start-up, signals and shutdown that tie them
// together (here). The pairing is internal/broker's; the service
// manager's protocols internal/systemd's; what is handed over, to the
// next program or the store, under which names, and the upgrade's keeper
// internal/handover's.
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
	"strings"
	"syscall"
	"time"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/handover"
	"github.com/one-socket/one-socket/internal/metrics"
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
	if len(args) > 0 && (args[0] == handover.VersionFlag || args[0] == handover.CheckFlag) {
		// A probe of the upgrade being signalled: "systemctl kill -s USR2"
		// reaches every process of the service, this one included.
		signal.Ignore(syscall.SIGUSR2, syscall.SIGHUP)
	}
	if len(args) == 1 && args[0] == handover.VersionFlag {
		// Hidden: an upgrade asks the new binary which format it reads.
		fmt.Fprintln(stdout, handover.Version)
		return 0
	}
	if len(args) > 0 && (args[0] == handover.KeeperFlag || args[0] == handover.KeeperArmedFlag) {
		// Hidden: the keeper of an upgrade (internal/handover's keeper.go).
		return handover.RunKeeper(args[0], args[1:])
	}
	if len(args) > 0 && args[0] == handover.CheckFlag {
		// Hidden: an upgrade asks the new binary whether it would start.
		return checkConfig(args[1:], stderr)
	}

	// What the environment hands over is taken, and the variables unset,
	// first of all: nothing this process starts may inherit them. A
	// program taking over from an upgrade takes the State first, so that
	// whatever fails from then on until it serves gives it back.
	boot := &startup{fallback: handover.TakeFallback(), keeper: handover.TakeKeeper(), prevMaxConns: takeMaxConns(), failed: os.Getenv(handover.EnvFailed)}
	os.Unsetenv(handover.EnvFailed)
	var err error
	if boot.ho, err = handover.Take(); err != nil {
		fmt.Fprintf(stderr, "one-socket: cannot take over: %v\n", err)
		return 1
	}
	defer func() {
		if p := recover(); p != nil {
			boot.giveBack(fmt.Errorf("the new program panicked: %v", p), nil)
			panic(p)
		}
	}()
	cfg, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) && boot.ho == nil {
		return 0
	}
	if err != nil {
		boot.giveBack(fmt.Errorf("the new program does not take the command line: %w", err), nil)
		return 2
	}
	if cfg.version && boot.ho == nil {
		fmt.Fprintf(stdout, "one-socket %s\n", versionString())
		return 0
	}
	if boot.report, err = takeStartReport(); err != nil {
		fmt.Fprintf(stderr, "one-socket: %v\n", err)
		return 1
	}
	boot.act, boot.actErr = handover.TakePassed(os.Getpid())
	notify, notifyErr := systemd.NewNotifier()
	boot.notifyErr = notifyErr

	if cfg.detach && boot.report == nil && boot.ho == nil {
		if boot.act != nil || boot.actErr != nil {
			boot.act.Close()
			fmt.Fprintln(stderr, "one-socket: --detach cannot be used with socket activation: the service manager runs the daemon")
			return 1
		}
		return detach(args, stderr)
	}

	d := &instance{cfg: cfg, notify: notify, level: new(slog.LevelVar), boot: boot, metrics: newMetrics()}
	if boot.ho != nil {
		d.exe = boot.ho.Exe
	} else if d.exe, err = executablePath(os.Args[0]); err != nil {
		boot.exeErr = err
	}
	d.level.Set(cfg.logLevel)
	return d.run(stderr)
}

// instance is a running daemon: the broker, its sockets and what the
// process set up around it.
type instance struct {
	cfg    *config
	log    *slog.Logger
	level  *slog.LevelVar
	logf   *logFile          // --log-file, or nil
	notify *systemd.Notifier // the service manager's notify socket, or nil
	policy policyState       // --policy and the policy in force

	b *broker.Broker
	// metrics reads the broker's counters for one-socketctl metrics and
	// --metrics-listen (metricsSrv, nil without it).
	metrics    *metrics.Metrics
	metricsSrv *metricsServer
	bcfg       broker.Config // what a new broker is made with, but the authorizer
	served     chan error    // the broker's Serve result; nil when none runs

	sock      socket // the broker socket
	ctlSock   socket // the control socket; its path is "" without one
	activated bool   // the broker socket is the service manager's
	ctl       controlServer
	pidf      *pidFile
	started   time.Time
	exe       string // the binary an upgrade runs, as invoked; "" when unknown
	// legacyTarget says the binary an upgrade runs is older than
	// handover.CheckFlag, and reads only what v0.1.0 wrote.
	legacyTarget bool
	// store is the service manager's file descriptor store, which a stop
	// hands the clients to and which keeps each waiting client while it
	// waits, for a crash; nil without --fdstore.
	store *handover.FDStore

	stopReq    chan struct{} // the control socket's stop
	upgradeReq chan struct{} // the control socket's upgrade, once checked

	boot *startup // what only the start-up uses; nil once the daemon serves
}

// socket is where a socket of the daemon is, and its file if this process
// created it.
type socket struct {
	path string
	file *socketFile // nil when the service manager owns the file, or it is kept for the next instance
}

// startup is what the environment passed to this process, which the
// start-up takes over or undoes.
type startup struct {
	act      *handover.Passed   // sockets and stored clients from the service manager, or nil
	report   *startReport       // the pipe to a --detach parent, or nil
	ho       *handover.State    // what the previous program handed over, until it serves them; or nil
	fallback handover.Fallback  // the previous program, to give ho back to
	keeper   int                // the pipe to the upgrade's keeper, or -1
	failed   string             // why a new program gave the clients back to this one, or ""
	restored *handover.Restored // the clients taken back from the store, or nil
	// The previous program's connection limit, to give back with the
	// clients (giveback.go); 0 when unknown.
	prevMaxConns int
	// Found before the log exists, reported once it does.
	actErr, notifyErr, exeErr error
}

// run starts the daemon, serves until a stop, and returns the exit status.
func (d *instance) run(stderr io.Writer) int {
	cfg, boot := d.cfg, d.boot
	var pathErr error
	if boot.ho != nil {
		d.sock.path, d.ctlSock.path = boot.ho.Socket.Path, boot.ho.CtlSocket.Path
		cfg.logFile = boot.ho.LogFile
	} else {
		pathErr = d.settlePaths()
	}

	// The log first, so that every later failure is logged where the
	// operator asked; errors found so far are reported once it exists.
	var logw io.Writer = stderr
	var logErr error
	if cfg.logFile != "" {
		lf, err := openLogFile(cfg.logFile, boot.report != nil)
		switch {
		case err == nil:
			d.logf, logw = lf, lf
		case boot.ho != nil:
			// The clients are here already: serve them, logging to
			// standard error, rather than lose them for the log.
			logErr = err
		default:
			d.log = slog.New(newLogHandler(stderr, cfg.logFormat, logToJournal(stderr), nil))
			return d.fail(err)
		}
	}
	d.log = slog.New(newLogHandler(logw, cfg.logFormat, logToJournal(logw), &slog.HandlerOptions{Level: d.level}))
	log := d.log
	if logErr != nil {
		log.Error("cannot reopen the log file after the upgrade; logging to standard error", "err", logErr)
	}
	if boot.failed != "" && boot.ho != nil {
		log.Error("the new program could not start; this one took the clients back", "reason", boot.failed)
	}
	for _, err := range []error{boot.actErr, pathErr} {
		if err != nil {
			return d.fail(err)
		}
	}
	if boot.exeErr != nil {
		log.Warn("cannot resolve the daemon's binary: upgrades are disabled", "argv0", os.Args[0], "err", boot.exeErr)
	}
	if boot.notifyErr != nil {
		// The broker works without it; a manager waiting for READY=1 will
		// say so, and this line says why.
		log.Warn("cannot notify the service manager", "err", boot.notifyErr)
	}
	if handover.StoreWanted(cfg.fdstore, os.Getenv) {
		if d.notify == nil {
			log.Warn("--fdstore needs a service manager (NOTIFY_SOCKET): a stop will disconnect the waiting clients")
		} else {
			d.store = handover.NewFDStore(d.notify)
		}
	}
	var storeErr error
	if boot.restored, storeErr = boot.act.TakeStored(time.Now()); storeErr != nil {
		log.Warn("cannot take back the stored clients", "err", storeErr)
	}
	act := boot.act
	d.activated = act != nil && act.Broker != nil
	if d.activated && cfg.socket != "" && cfg.socket != d.sock.path {
		log.Warn("--socket ignored: the service manager passed the broker socket", "socket", d.sock.path)
	}

	setGOMAXPROCS()
	nofile, err := raiseNoFile()
	if err != nil {
		log.Warn("cannot raise the descriptor limit", "limit", nofile, "err", err)
	}
	// The policy before anything is created: a daemon that cannot apply
	// the policy it was given must not start without it.
	if err := d.policy.start(cfg.policy, boot.ho != nil, log); err != nil {
		return d.fail(fmt.Errorf("policy: %w", err), "policy", cfg.policy)
	}
	if err := d.checkAbstract(); err != nil && boot.ho != nil {
		// Accepted by the program before: a restart would refuse it.
		log.Warn("a start would refuse this socket", "socket", d.sock.path, "err", err)
	} else if err != nil {
		return d.fail(err, "socket", d.sock.path)
	}
	gid := -1
	if cfg.socketGroup != "" {
		switch {
		case d.activated:
			log.Warn("--socket-group ignored: the service manager passed the broker socket", "socket", d.sock.path)
		case isAbstract(d.sock.path):
			return d.fail(errors.New("--socket-group cannot be used with an abstract socket, which has no file"), "socket", d.sock.path)
		default:
			if gid, err = lookupSocketGroup(cfg.socketGroup); err != nil {
				return d.fail(err)
			}
		}
	}
	maxConns, err := d.maxConns()
	if err != nil {
		return d.fail(err)
	}
	d.bcfg = broker.Config{
		Logger:           log,
		HandshakeTimeout: cfg.handshakeTimeout,
		MaxConns:         maxConns,
		MaxWaitingPerUID: cfg.maxWaitingPerUID,
		MaxConnsPerUID:   cfg.maxConnsPerUID,
		MaxWait:          cfg.maxWait,
	}
	if d.store != nil {
		// New waiters' ids start above those stored already.
		if r := boot.restored; r != nil {
			for _, c := range r.Conns {
				d.store.Above(c.Stored)
			}
		}
		if boot.ho != nil {
			for _, c := range boot.ho.Conns {
				d.store.Above(c.Stored)
			}
		}
		d.bcfg.Store = d.store
	}
	if err := d.startMetrics(); err != nil && boot.ho != nil {
		// The clients are here already: serve them without metrics.
		log.Error("cannot serve metrics after the upgrade", "err", err)
	} else if err != nil {
		return d.fail(err)
	}
	d.b, err = broker.New(d.brokerConfig())
	if err != nil {
		return d.fail(err)
	}
	if r := boot.restored; r != nil {
		d.b.Carry(r.Totals.Stats())
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
	d.stopReq = make(chan struct{}, 1)
	d.upgradeReq = make(chan struct{}, 1)
	if boot.ho != nil {
		return d.adopt(sigs, hups, usr2, nofile)
	}

	// The pid file before the sockets: a second daemon with the same pid
	// file must not touch them.
	if cfg.pidFile != "" {
		if d.pidf, err = createPidFile(cfg.pidFile); err != nil {
			return d.fail(err)
		}
	}
	// The control socket is made before the broker socket, so that once
	// the broker socket accepts, everything does. The broker's path is
	// checked first all the same: a second daemon is told about the broker
	// that runs there, not about its control socket.
	if !d.activated && !isAbstract(d.sock.path) {
		if err := clearPath(d.sock.path, log); err != nil {
			return d.fail(err, "socket", d.sock.path)
		}
	}
	if act != nil && act.Control != nil {
		d.ctl.ln, act.Control = act.Control, nil
	} else if d.ctlSock.path != "" {
		if d.ctl.ln, d.ctlSock.file, err = listen(d.ctlSock.path, ctlSocketMode, -1, log); err != nil {
			return d.fail(fmt.Errorf("control socket: %w", err), "ctl_socket", d.ctlSock.path)
		}
	}
	var ln *net.UnixListener
	if d.activated {
		ln, act.Broker = act.Broker, nil
	} else if ln, d.sock.file, err = listen(d.sock.path, cfg.socketMode, gid, log); err != nil {
		return d.fail(err, "socket", d.sock.path)
	}
	taken := 0
	if r := boot.restored; r != nil {
		taken = len(r.Conns)
		// Before the engine keeps any of them under a name of its own: the
		// manager ignores a descriptor it holds already, under any name.
		handover.ForgetStored(d.notify, r.Closed, d.notifyFailed)
	}
	if err := d.startEngine(ln); err != nil {
		return d.fail(err)
	}

	d.started = time.Now()
	d.startControl()

	d.logStarted(nofile)
	boot.report.ok()
	d.ready()
	if r := boot.restored; r != nil {
		// A stop leaves a description; a crash only the waiters' copies.
		from := "crash"
		if r.Described {
			from = "stop"
		}
		log.Info("clients taken back from the service manager", "clients", taken,
			"stored", r.Counts.Clients, "kept", r.Kept, "hung_up", r.Lost, "unknown", r.Stray,
			"after", from, "counters", carried(r.Totals != nil), "policy", d.policy.current())
	}
	d.boot = nil
	return d.serve(sigs, hups, usr2)
}

// startEngine runs the broker on ln, with the clients taken back from the
// file descriptor store if there are any.
func (d *instance) startEngine(ln *net.UnixListener) error {
	d.served = make(chan error, 1)
	r := d.boot.restored
	if r == nil || len(r.Conns) == 0 {
		go func() { d.served <- d.b.Serve(ln) }()
		return nil
	}
	lfd, err := scm.Dup(ln)
	ln.Close()
	if err != nil {
		d.served = nil
		return fmt.Errorf("broker socket: %w", err)
	}
	st := &broker.State{Listener: lfd, Conns: r.Conns}
	r.Conns = nil // the engine owns them now
	go func() { d.served <- d.b.ServeState(st) }()
	return nil
}

// settlePaths decides where the broker and control sockets are, before
// anything is opened: a detached daemon makes every path absolute and
// leaves its working directory.
func (d *instance) settlePaths() error {
	cfg, act := d.cfg, d.boot.act
	var err error
	if act != nil && act.Broker != nil {
		d.sock.path = listenerPath(act.Broker)
	} else if d.sock.path, err = paths.BrokerSocket(cfg.socket, os.Getenv, os.Geteuid()); err != nil {
		return err
	}
	switch {
	case act != nil && act.Control != nil:
		d.ctlSock.path = listenerPath(act.Control)
	case act != nil:
		// Under socket activation the sockets are the service manager's to
		// create: a control socket it did not pass is made only when named.
		d.ctlSock.path = ctlSocketPath(cfg, "", os.Getenv)
	default:
		d.ctlSock.path = ctlSocketPath(cfg, d.sock.path, os.Getenv)
	}
	if d.boot.report != nil {
		return detachPaths(&d.sock.path, &d.ctlSock.path, &cfg.pidFile, &cfg.logFile)
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
		case err := <-d.ctl.served:
			// The broker goes on without its control socket.
			d.ctl.served = nil
			log.Warn("control socket failed", "ctl_socket", d.ctlSock.path, "err", err)
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
	if d.store != nil {
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
		"denied", s.Denied, "over_quota", s.OverQuota, "expired", s.Expired, "shed", s.Shed)
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
	d.removeSockets()
	if d.b != nil {
		d.b.Shutdown()
	}
	if d.served != nil {
		<-d.served
		d.served = nil
	}
	d.ctl.close()
	d.stopMetrics()
}

// removeSockets removes the socket files this process created and still
// owns.
func (d *instance) removeSockets() {
	d.removeSocket(d.sock.file)
	d.removeSocket(d.ctlSock.file)
	d.sock.file, d.ctlSock.file = nil, nil
}

// fail undoes a start-up that failed with err, reports err (to the log,
// the --detach parent and the service manager) and returns the exit
// status 1. args are added to the log line.
func (d *instance) fail(err error, args ...any) int {
	if d.boot.ho != nil {
		d.log.Error("the new program cannot start; giving the clients back to the previous one", append(args, "err", err)...)
		d.boot.giveBack(err, d.notify.Env())
	}
	d.log.Error("cannot start", append(args, "err", err)...)
	d.shutdown()
	boot := d.boot
	boot.act.Close()
	if r := boot.restored; r != nil {
		// Still in the service manager's store: only these copies go.
		(&broker.State{Listener: -1, Conns: r.Conns}).Close()
		boot.restored = nil
	}
	d.removePidFile()
	boot.report.fail(fmt.Errorf("cannot start: %w", err))
	if serr := d.notify.Notify("STATUS=cannot start: " + err.Error()); serr != nil {
		d.notifyFailed(serr)
	}
	return 1
}

// logStarted writes the start line.
func (d *instance) logStarted(nofile uint64) {
	args := []any{"socket", d.sock.path}
	if d.sock.file != nil && !d.sock.file.abstract {
		args = append(args, "mode", fmt.Sprintf("%04o", uint32(d.cfg.socketMode)))
		if d.cfg.socketGroup != "" {
			args = append(args, "group", d.cfg.socketGroup)
		}
	}
	if d.ctl.srv != nil {
		args = append(args, "ctl_socket", d.ctlSock.path)
	}
	if d.activated {
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
	args = append(args, "max_conns", d.b.MaxConns(), "max_conns_per_uid", d.b.MaxConnsPerUID(), "nofile", nofile,
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

// checkAbstract refuses an abstract broker socket set up as if it had a
// file: it has no mode, so anyone in the network namespace can connect,
// and without a policy pair with any key.
func (d *instance) checkAbstract() error {
	if d.activated || !isAbstract(d.sock.path) {
		return nil
	}
	if d.cfg.socketModeSet {
		return errors.New("--socket-mode cannot apply to an abstract socket, which has no file: " +
			"every user in the network namespace can connect to it; use --policy to decide who may pair")
	}
	if d.policy.path == "" && !d.cfg.openAbstract {
		return errors.New("an abstract socket lets every user in the network namespace connect, and " +
			"without --policy pair with any key: give --policy, or --open-abstract to accept that")
	}
	return nil
}

// maxConns is the connection limit: --max-conns; the limit the program
// had, for one given its clients back; or derived from the descriptor
// limit. The clients an upgrade or the store passed are open already and
// would count as overhead: they are added back, so that the limit after a
// restart is the limit before it.
func (d *instance) maxConns() (int, error) {
	if d.cfg.maxConns > 0 {
		return d.cfg.maxConns, nil
	}
	if b := d.boot; b.ho != nil && b.failed != "" && b.prevMaxConns > 0 {
		// Given the clients back: serve them with the limit this program
		// had, even if the descriptor limit now leaves no room for it (it
		// was lowered under the running daemon), rather than lose them.
		return b.prevMaxConns, nil
	}
	// The descriptors the previous program opened after it took its
	// limit (its sockets, pid file and clients), the fallback's and the
	// keeper's pipe.
	inherited := 0
	if ho := d.boot.ho; ho != nil {
		inherited = len(ho.FDs())
		for _, fd := range []int{d.boot.fallback.FD, d.boot.keeper} {
			if fd >= 0 {
				inherited++
			}
		}
	}
	if r := d.boot.restored; r != nil {
		inherited += len(r.Conns)
	}
	return broker.MaxConnsBesides(inherited)
}

// giveBack executes the previous program's binary with the State it
// handed over, when this program took over by an upgrade and cannot
// serve: the clients go back rather than away. It returns only when there
// is nothing to give back or the exec failed. env is added to the
// environment (the notify socket, once it was taken from it).
func (s *startup) giveBack(why error, env []string) {
	if s.ho == nil || s.fallback.FD < 0 {
		return
	}
	// The previous binary is known to serve: the keeper may go.
	handover.ReleaseKeeper(s.keeper)
	s.keeper = -1
	reason := strings.ReplaceAll(why.Error(), "\n", " ")
	env = append(handover.WithoutEnv(os.Environ(), handover.EnvFailed, "NOTIFY_SOCKET", envMaxConns),
		append(env, handover.EnvFailed+"="+reason)...)
	if s.prevMaxConns > 0 {
		env = append(env, maxConnsEnv(s.prevMaxConns))
	}
	err := handover.Exec(s.ho, "", s.fallback.FD, s.fallback.Args, env)
	fmt.Fprintf(os.Stderr, "one-socket: cannot give the clients back: %v\n", err)
}
