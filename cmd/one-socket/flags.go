package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/paths"
	"github.com/one-socket/one-socket/internal/policy"
	"github.com/one-socket/one-socket/internal/safefile"
)

// The variables that name the sockets when the flags do not; the original
// daemon reads the same two. internal/paths decides the defaults, so that
// one-socketctl finds the daemon without being told.
const (
	envSocketPath = paths.EnvBrokerSocket
	envCtlPath    = paths.EnvControlSocket
)

// ctlSocketMode lets only the daemon's own user (and root) connect: the
// control socket can stop the broker and disconnect its clients.
const ctlSocketMode fs.FileMode = 0o600

// defaultSocketMode lets the owner and the owner's group connect.
const defaultSocketMode fs.FileMode = 0o660

// config is the daemon's configuration after flags are parsed. The socket
// paths are resolved separately (paths.BrokerSocket, ctlSocketPath) since
// they depend on the environment.
type config struct {
	socket           string // --socket, empty when not given
	socketMode       fs.FileMode
	ctlSocket        string // --ctl-socket, meaningful when ctlSocketSet
	ctlSocketSet     bool   // --ctl-socket was given, even as ""
	logLevel         slog.Level
	logFile          string
	logFormat        string // --log-format: logFormatText or logFormatJSON
	pidFile          string
	detach           bool
	handshakeTimeout time.Duration
	maxConns         int
	policy           string        // --policy, empty for none
	maxWaitingPerUID int           // 0: no limit
	maxConnsPerUID   int           // 0: half of max-conns; -1: none
	maxWait          time.Duration // 0: no limit
	socketGroup      string        // --socket-group, empty to leave the group alone
	fdstore          bool          // --fdstore: keep clients in systemd's store across a restart
	ctlAllow         uidList       // --ctl-allow-uid: who may use the control socket besides root and the daemon's uid
	openAbstract     bool          // --open-abstract: an abstract broker socket without a policy
	metricsListen    string        // --metrics-listen: host:port or unix:PATH, empty for none
	socketModeSet    bool          // --socket-mode was given
	version          bool
}

// errUsage marks a command line that cannot be used; main exits 2 on it.
var errUsage = errors.New("usage error")

// parseFlags parses the command line (without the program name). It
// returns flag.ErrHelp for -h/--help after printing the usage text to
// stdout, and an error wrapping errUsage, already explained on stderr, for
// anything it cannot accept.
func parseFlags(args []string, stdout, stderr io.Writer) (*config, error) {
	cfg := &config{
		socketMode:       defaultSocketMode,
		logLevel:         slog.LevelInfo,
		logFormat:        logFormatText,
		handshakeTimeout: broker.DefaultHandshakeTimeout,
	}
	set := flag.NewFlagSet("one-socket", flag.ContinueOnError)
	set.SetOutput(stderr)
	set.StringVar(&cfg.socket, "socket", "", "listen on `PATH`; a name starting with '@' is a Linux abstract socket\n"+
		"(default: $"+envSocketPath+", else "+paths.RootBrokerSocket+" for root,\nelse $XDG_RUNTIME_DIR/one.socket)")
	set.Var((*modeValue)(&cfg.socketMode), "socket-mode", "give the socket file the permission bits `MODE` (octal) as bind creates it")
	set.StringVar(&cfg.ctlSocket, "ctl-socket", "", "serve the control protocol (one-socketctl) on `PATH`, mode 0600;\n"+
		"\"none\" or \"\" disables it (default: $"+envCtlPath+", else\n"+paths.ControlSocketName+" in the broker socket's directory)")
	set.Var((*levelValue)(&cfg.logLevel), "log-level", "log at `LEVEL` and above: debug, info, warn or error;\ndebug adds a line per client event")
	set.StringVar(&cfg.logFile, "log-file", "", "append the log to `PATH` instead of standard error;\nSIGHUP reopens it")
	set.StringVar(&cfg.logFormat, "log-format", cfg.logFormat, "write the log as `FORMAT`: text (key=value) or json (an object a line)")
	set.StringVar(&cfg.pidFile, "pidfile", "", "write the daemon's process ID to `PATH` and hold a lock on it;\na second daemon with the same PATH refuses to start")
	set.BoolVar(&cfg.detach, "detach", false, "run in the background: return once the daemon listens, with status 0,\nor with its error and status if it cannot start")
	set.DurationVar(&cfg.handshakeTimeout, "handshake-timeout", cfg.handshakeTimeout,
		"disconnect a client that has not sent its whole GET_PAIR\nwithin `DURATION` (e.g. 500ms, 5s)")
	set.IntVar(&cfg.maxConns, "max-conns", 0, "accept at most `N` client connections at once;\n0 derives N from the descriptor limit")
	set.StringVar(&cfg.policy, "policy", "", "decide who may ask for which keys by the policy file `FILE`;\n"+
		"SIGHUP or 'one-socketctl reload' rereads it")
	set.IntVar(&cfg.maxConnsPerUID, "max-conns-per-uid", 0, "let each user (by uid) but root hold at most `N` connections, sending or\n"+
		"waiting; 0 means half the connection limit; when the broker is full, the\n"+
		"user holding the most loses its newest unfinished connection first;\n"+
		"-1 turns off both the limit and that shedding")
	set.IntVar(&cfg.maxWaitingPerUID, "max-waiting-per-uid", 0, "let each user (by uid) have at most `N` clients waiting;\n0 means no limit")
	set.DurationVar(&cfg.maxWait, "max-wait", 0, "disconnect a client that has waited `DURATION` for its peer;\n0 means no limit")
	set.StringVar(&cfg.socketGroup, "socket-group", "", "give the socket file to `GROUP` (a name or a number) after bind,\nwithout following a link")
	set.BoolVar(&cfg.fdstore, "fdstore", false, "at a stop, hand waiting clients to systemd's file descriptor store,\n"+
		"which gives them back at the next start (needs FileDescriptorStoreMax=;\n"+
		"on by itself when systemd sets $FDSTORE)")
	set.Var(&cfg.ctlAllow, "ctl-allow-uid", "let the users `USERS` (names or uids, comma-separated) use the control\n"+
		"socket too; root and the daemon's own user always may")
	set.BoolVar(&cfg.openAbstract, "open-abstract", false, "accept an abstract broker socket (@name) without --policy, although\n"+
		"every user in the network namespace may then pair with any key")
	set.StringVar(&cfg.metricsListen, "metrics-listen", "", "serve Prometheus metrics over HTTP at /metrics on `ADDR`: host:port,\n"+
		"or unix:PATH for a Unix socket (default: none; one-socketctl metrics\nalways has them)")
	set.BoolVar(&cfg.version, "version", false, "print the version and exit")
	// The flag package calls Usage both for --help and after printing an
	// error; the full text goes to stdout for --help only, and a mistake
	// gets a pointer to it, below.
	set.Usage = func() {}

	if err := set.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(set, stdout)
			return nil, err
		}
		fmt.Fprintln(stderr, "Run 'one-socket --help' for usage.")
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	bad := func(format string, a ...any) (*config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintf(stderr, "one-socket: %v\nRun 'one-socket --help' for usage.\n", err)
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	set.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "ctl-socket":
			cfg.ctlSocketSet = true
		case "socket-mode":
			cfg.socketModeSet = true
		}
	})
	if set.NArg() > 0 {
		return bad("unexpected argument %q (the socket path is given with --socket)", set.Arg(0))
	}
	if cfg.logFormat != logFormatText && cfg.logFormat != logFormatJSON {
		return bad("--log-format must be text or json, not %q", cfg.logFormat)
	}
	if cfg.handshakeTimeout <= 0 {
		return bad("--handshake-timeout must be positive, not %v", cfg.handshakeTimeout)
	}
	if cfg.maxConns < 0 {
		return bad("--max-conns must be 0 (derived) or more, not %d", cfg.maxConns)
	}
	if cfg.maxConnsPerUID < -1 {
		return bad("--max-conns-per-uid must be -1 (no limit), 0 (half of --max-conns) or more, not %d", cfg.maxConnsPerUID)
	}
	if cfg.maxWaitingPerUID < 0 {
		return bad("--max-waiting-per-uid must be 0 (no limit) or more, not %d", cfg.maxWaitingPerUID)
	}
	if cfg.maxWait < 0 {
		return bad("--max-wait must be 0 (no limit) or more, not %v", cfg.maxWait)
	}
	if cfg.metricsListen != "" {
		if _, _, err := parseMetricsListen(cfg.metricsListen); err != nil {
			return bad("%v", err)
		}
	}
	return cfg, nil
}

// usage prints the help text: what the daemon does, its flags spelled with
// two dashes as the documentation spells them, and the environment it reads.
func usage(set *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, `Usage: one-socket [flags]

one-socket is a SocketPair Broker: it listens on one Unix socket and gives
two clients that ask with the same key the two ends of a fresh socketpair.

Flags:
`)
	set.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if name != "" {
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintf(w, "\n    \t%s", strings.ReplaceAll(text, "\n", "\n    \t"))
		switch f.DefValue {
		case "", "0", "0s", "false":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	fmt.Fprint(w, `
Environment:
  ONE_SOCKET_PATH      socket path when --socket is not given
  ONE_SOCKET_CTL_PATH  control socket path when --ctl-socket is not given
  XDG_RUNTIME_DIR      holds the default socket for a user other than root
  GOMAXPROCS           threads running Go code; one-socket uses 1 unless set
  LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID
                       sockets passed by systemd (socket activation): the
                       one named "broker" (or a single unnamed one) and the
                       one named "control" replace --socket and --ctl-socket
  NOTIFY_SOCKET        where to send readiness and status (Type=notify)
  FDSTORE              the size of systemd's file descriptor store; when
                       positive, as --fdstore

SIGINT or SIGTERM stops the broker: waiting clients are disconnected and
the socket files it created and the pid file are removed. SIGHUP reopens
--log-file and rereads --policy. See one-socket(8).
`)
}

// ctlSocketPath decides where the control socket goes, "" for nowhere:
// --ctl-socket when given, else paths.ControlSocket's default beside
// brokerPath ("" for none). "none" (and a --ctl-socket of "") disables
// it, in the flag as in $ONE_SOCKET_CTL_PATH.
func ctlSocketPath(cfg *config, brokerPath string, getenv func(string) string) string {
	if cfg.ctlSocketSet && cfg.ctlSocket == "" {
		return ""
	}
	p := paths.ControlSocket(cfg.ctlSocket, brokerPath, getenv)
	if p == "none" {
		return ""
	}
	return p
}

// modeValue is a flag.Value for permission bits written in octal.
type modeValue fs.FileMode

func (m *modeValue) String() string { return fmt.Sprintf("%04o", uint32(*m)) }

func (m *modeValue) Set(s string) error {
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	v, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || digits == "" {
		return fmt.Errorf("%q is not an octal mode such as 0660", s)
	}
	// Only permission bits: setuid, setgid and sticky mean nothing on a
	// socket, and os.Chmod would not take them in this form anyway.
	if v > 0o777 {
		return fmt.Errorf("mode %s has bits beyond 0777", s)
	}
	*m = modeValue(v)
	return nil
}

// levelValue is a flag.Value for the four log levels by name.
type levelValue slog.Level

func (l *levelValue) String() string { return strings.ToLower(slog.Level(*l).String()) }

func (l *levelValue) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug":
		*l = levelValue(slog.LevelDebug)
	case "info":
		*l = levelValue(slog.LevelInfo)
	case "warn", "warning":
		*l = levelValue(slog.LevelWarn)
	case "error":
		*l = levelValue(slog.LevelError)
	default:
		return fmt.Errorf("unknown level %q: want debug, info, warn or error", s)
	}
	return nil
}

// uidList is a flag.Value for users given by name or uid, comma-separated,
// in one flag or several.
type uidList []uint32

func (u *uidList) String() string {
	var s []string
	for _, uid := range *u {
		s = append(s, strconv.FormatUint(uint64(uid), 10))
	}
	return strings.Join(s, ",")
}

func (u *uidList) Set(v string) error {
	for name := range strings.SplitSeq(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 32); err == nil {
			*u = append(*u, uint32(n))
			continue
		}
		usr, err := user.Lookup(name)
		if err != nil {
			return fmt.Errorf("%q is neither a uid nor a user: %w", name, err)
		}
		n, err := strconv.ParseUint(usr.Uid, 10, 32)
		if err != nil {
			return fmt.Errorf("user %q has uid %q: %w", name, usr.Uid, err)
		}
		*u = append(*u, uint32(n))
	}
	return nil
}

// checkConfig is the daemon run with handover.CheckFlag: it checks that a
// start with args would get past its configuration (the flags, the
// policy, the log file) and starts nothing. It prints what is wrong, and
// returns 0 or, as a start would, 2 or 1.
func checkConfig(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, io.Discard, stderr)
	if err != nil {
		return 2
	}
	if cfg.policy != "" {
		if _, err := policy.Load(cfg.policy); err != nil {
			fmt.Fprintf(stderr, "one-socket: policy: %v\n", err)
			return 1
		}
	}
	if cfg.logFile != "" {
		f, err := safefile.OpenOwn(cfg.logFile, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "one-socket: %v\n", err)
			return 1
		}
		if f != nil {
			f.Close()
		}
	}
	return 0
}
