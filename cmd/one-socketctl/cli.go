package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/libspbroker"
)

// options is the parsed command line.
type options struct {
	ctlSocket string
	socket    string
	json      bool
	timeout   time.Duration // 0: the command's default
	hex       bool
	mode      libspbroker.Mode
	help      bool
	version   bool

	// pair's ways to reach a program that cannot take a connected
	// socket (adapt.go); at most one of the first three.
	listeningFD   bool
	connect       string
	listen        string
	listenMode    os.FileMode
	listenModeSet bool
	wait          time.Duration
	handoff       bool
	noRetry       bool // pair: the first failure to reach the broker is final

	// top (top.go)
	group string // group keys by their prefix up to this separator
	once  bool   // print one frame and exit

	command string
	args    []string // the command's arguments
	exec    []string // pair: the command after "--", if any
}

// command describes one command for parsing and for --help.
type command struct {
	name     string
	synopsis string   // arguments, for the help text
	help     string   // one line
	flags    []string // flags it takes beyond --help
	min, max int      // number of arguments
	run      func(*app, *options) int
}

// controlFlags are taken by every command that talks to the control socket.
var controlFlags = []string{"ctl-socket", "socket", "json", "timeout"}

// commands in the order --help lists them.
var commands = []*command{
	{name: "status", help: "show version, pid, uptime, sockets and counters",
		flags: controlFlags, run: (*app).status},
	{name: "list", help: "list the clients waiting for a peer",
		flags: controlFlags, run: (*app).list},
	{name: "drop", synopsis: "KEY", help: "disconnect every client waiting with KEY",
		flags: append([]string{"hex"}, controlFlags...), min: 1, max: 1, run: (*app).drop},
	{name: "log-level", synopsis: "[LEVEL]", help: "show or set the log level: debug, info, warn, error",
		flags: controlFlags, max: 1, run: (*app).logLevel},
	{name: "reload", help: "reread the broker's access policy (--policy)",
		flags: controlFlags, run: (*app).reload},
	{name: "upgrade", help: "restart the broker by re-exec of its binary, keeping every client",
		flags: controlFlags, run: (*app).upgrade},
	{name: "metrics", help: "print the broker's metrics in the Prometheus text format",
		flags: controlFlags, run: (*app).metrics},
	{name: "stop", help: "stop the broker gracefully",
		flags: controlFlags, run: (*app).stop},
	{name: "top", help: "a live view: waiting keys, pairs/s, refusals, connections",
		flags: []string{"ctl-socket", "socket", "timeout", "group", "once"}, run: (*app).top},
	{name: "version", help: "print this tool's and the running broker's versions",
		flags: controlFlags, run: (*app).versions},
	{name: "pair", synopsis: "KEY [-- CMD [ARG...]]",
		help: "get a pair: bridge it to stdin/stdout, or to CMD as fd 3",
		flags: []string{"socket", "timeout", "hex", "mode",
			"listening-fd", "connect", "listen", "listen-mode", "wait", "handoff", "no-retry"},
		min: 1, max: 1, run: (*app).pair},
	{name: "help", synopsis: "[COMMAND]", help: "print this help", max: 1},
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// usageError is a command line the tool cannot use: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// newFlagSet declares every flag; parse then checks which ones the
// command takes.
func newFlagSet(o *options) *flag.FlagSet {
	set := flag.NewFlagSet("one-socketctl", flag.ContinueOnError)
	set.SetOutput(io.Discard)
	set.StringVar(&o.ctlSocket, "ctl-socket", "", "")
	set.StringVar(&o.socket, "socket", "", "")
	set.BoolVar(&o.json, "json", false, "")
	set.Func("timeout", "", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration such as 500ms, 5s or 1m")
		}
		o.timeout = d
		return nil
	})
	set.BoolVar(&o.hex, "hex", false, "")
	set.Func("mode", "", func(s string) error {
		switch s {
		case "none":
			o.mode = libspbroker.ModeNone
		case "client":
			o.mode = libspbroker.ModeClient
		case "server":
			o.mode = libspbroker.ModeServer
		default:
			return fmt.Errorf("want none, client or server")
		}
		return nil
	})
	set.BoolVar(&o.listeningFD, "listening-fd", false, "")
	set.StringVar(&o.connect, "connect", "", "")
	set.StringVar(&o.listen, "listen", "", "")
	set.Func("listen-mode", "", func(s string) error {
		m, err := strconv.ParseUint(s, 8, 32)
		if err != nil || m > 0777 {
			return fmt.Errorf("want an octal mode such as 0600 or 0660")
		}
		o.listenMode, o.listenModeSet = os.FileMode(m), true
		return nil
	})
	set.Func("wait", "", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration such as 500ms, 5s or 1m")
		}
		o.wait = d
		return nil
	})
	set.BoolVar(&o.handoff, "handoff", false, "")
	set.BoolVar(&o.noRetry, "no-retry", false, "")
	set.Func("group", "", func(s string) error {
		if s == "" {
			return fmt.Errorf("want a separator such as a slash or a colon")
		}
		o.group = s
		return nil
	})
	set.BoolVar(&o.once, "once", false, "")
	set.BoolVar(&o.help, "help", false, "")
	set.BoolVar(&o.help, "h", false, "")
	set.BoolVar(&o.version, "version", false, "")
	return set
}

// parse reads the command line (without the program name). Flags may come
// before or after the command. "--" ends the flags; for pair, what follows
// it is the command to run.
func parse(args []string) (*options, error) {
	o := &options{}
	set := newFlagSet(o)
	pos, rest, dashdash, err := parseFlags(set, args)
	if err != nil {
		return nil, err
	}
	if o.help || o.version {
		return o, nil
	}
	if len(pos) == 0 {
		pos, rest, dashdash = rest, nil, false
	}
	if len(pos) == 0 {
		return nil, usagef("no command given")
	}
	o.command = pos[0]
	cmd := lookup(o.command)
	if cmd == nil {
		return nil, usagef("unknown command %q", o.command)
	}
	if cmd.name == "pair" {
		o.args = pos[1:]
		if dashdash {
			if len(rest) == 0 {
				return nil, usagef("pair: no command after --")
			}
			o.exec = rest
		}
	} else {
		o.args = append(pos[1:], rest...)
	}

	var bad error
	set.Visit(func(f *flag.Flag) {
		if bad == nil && f.Name != "help" && f.Name != "h" && f.Name != "version" && !takes(cmd, f.Name) {
			bad = usagef("%s does not take --%s", cmd.name, f.Name)
		}
	})
	switch {
	case bad != nil:
		return nil, bad
	case len(o.args) < cmd.min:
		return nil, usagef("%s needs %s", cmd.name, strings.Fields(cmd.synopsis)[0])
	case len(o.args) > cmd.max:
		return nil, usagef("%s: unexpected argument %q", cmd.name, o.args[cmd.max])
	}
	return o, nil
}

func takes(c *command, flagName string) bool {
	for _, f := range c.flags {
		if f == flagName {
			return true
		}
	}
	return false
}

// parseFlags sets the flags found anywhere in args and returns the other
// arguments: those before a "--", and those after it.
func parseFlags(set *flag.FlagSet, args []string) (pos, rest []string, dashdash bool, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return pos, args[i+1:], true, nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimPrefix(a[1:], "-")
		name, value, hasValue := strings.Cut(name, "=")
		f := set.Lookup(name)
		if f == nil || name == "" || strings.HasPrefix(name, "-") {
			return nil, nil, false, usagef("unknown flag %s", a)
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if i+1 == len(args) {
				return nil, nil, false, usagef("flag --%s needs a value", name)
			}
			i++
			value = args[i]
		}
		if err := set.Set(name, value); err != nil {
			return nil, nil, false, usagef("invalid value %q for --%s: %v", value, name, err)
		}
	}
	return pos, nil, false, nil
}

// key returns the KEY argument as bytes: as written, or decoded from
// hexadecimal (with or without a 0x prefix) under --hex.
func (o *options) key() ([]byte, error) {
	s := o.args[0]
	k := []byte(s)
	if o.hex {
		var err error
		digits := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
		if k, err = hex.DecodeString(digits); err != nil {
			return nil, usagef("%s: KEY %q is not hexadecimal: %v", o.command, s, err)
		}
	}
	if err := libspbroker.CheckKey(k); err != nil {
		return nil, usagef("%s: KEY must be 1 to 1024 bytes, not %d", o.command, len(k))
	}
	return k, nil
}

// level returns the LEVEL argument of log-level, "" when absent.
func (o *options) level() (string, error) {
	if len(o.args) == 0 {
		return "", nil
	}
	if _, err := control.ParseLevel(o.args[0]); err != nil {
		return "", usagef("log-level: %v", err)
	}
	return o.args[0], nil
}

// run is the whole tool; it returns the exit status.
func (a *app) run(args []string) int {
	o, err := parse(args)
	if err == nil && o.command != "" {
		err = o.check()
	}
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "one-socketctl: %v\nRun 'one-socketctl --help' for usage.\n", err)
		return exitUsage
	case err != nil:
		fmt.Fprintf(a.stderr, "one-socketctl: %v\n", err)
		return exitFailure
	case o.help || o.command == "help":
		a.usage()
		return exitOK
	case o.version:
		fmt.Fprintf(a.stdout, "one-socketctl %s\n", versionString())
		return exitOK
	}
	return lookup(o.command).run(a, o)
}

// check validates the arguments of the command, before anything is sent.
func (o *options) check() error {
	switch o.command {
	case "drop":
		_, err := o.key()
		return err
	case "pair":
		if _, err := o.key(); err != nil {
			return err
		}
		return o.checkAdapter()
	case "log-level":
		_, err := o.level()
		return err
	}
	return nil
}

func (a *app) usage() {
	fmt.Fprint(a.stdout, `Usage: one-socketctl [flags] COMMAND [ARG...]

one-socketctl controls a running one-socket (SocketPair Broker) through its
control socket, and gets pairs from the broker for the shell.

Commands:
`)
	for _, c := range commands {
		head := strings.TrimSpace(c.name + " " + c.synopsis)
		if len(head) > 18 {
			fmt.Fprintf(a.stdout, "  %s\n  %-18s  %s\n", head, "", c.help)
		} else {
			fmt.Fprintf(a.stdout, "  %-18s  %s\n", head, c.help)
		}
	}
	fmt.Fprint(a.stdout, `
Flags (before or after the command):
  --ctl-socket PATH   the control socket (default: $ONE_SOCKET_CTL_PATH, else
                      one-socket.ctl in the broker socket's directory)
  --socket PATH       the broker socket (default: $ONE_SOCKET_PATH, else
                      /run/one.socket for root, else
                      $XDG_RUNTIME_DIR/one.socket)
  --json              print the broker's answer as JSON
  --timeout D         give up after D (e.g. 500ms, 5s): a control command's
                      answer (default 5s), or pair's peer (default: never)
  --hex               drop, pair: KEY is hexadecimal (0x optional)
  --mode MODE         pair: none (the default), client or server
  --listening-fd      pair: CMD gets a listening socket as fd 3; the tool
                      connects to it and relays
  --connect PATH      pair: connect to the program listening on PATH, and relay
  --listen PATH       pair: listen on PATH for the program to connect, and relay
  --listen-mode MODE  pair: PATH's mode for --listen (default 0600)
  --wait D            pair: how long the program has to accept or connect,
                      or PATH to appear (default 30s)
  --handoff           pair: with one-socketctl --handoff on the other end,
                      hand the connection over instead of relaying
  --no-retry          pair: fail at once when the broker cannot be reached
                      or ends the connection without a pair, instead of
                      asking again until --timeout (a restart, a refusal)
  --group SEP         top: one row per key prefix up to the first SEP
                      (such as / or :) instead of one per key
  --once              top: print one frame and exit (as when standard
                      output is not a terminal)
  --version           print one-socketctl's version and exit
  -h, --help          print this help and exit

pair bridges the paired socket to standard input and output: on end of
input it shuts down its sending side and keeps printing what the peer sends
until the peer closes. With "-- CMD [ARG...]" it runs CMD instead, with the
socket as descriptor 3 and LISTEN_FDS=1, LISTEN_PID, LISTEN_FDNAMES set as
systemd does, and exits with CMD's status.

For a program that cannot take a connected socket, pair relays instead:
bytes both ways, and each SCM_RIGHTS descriptor with the byte it came
with. --listening-fd is for programs that listen on a descriptor they are
given (qemu-storage-daemon addr.type=fd, QEMU server=on,fd=3, virtiofsd
--fd); --connect for those that listen on a path (DPDK vhost client=0);
--listen for those that connect to one (DPDK client=1, QEMU path=).
--handoff must be given on both ends; they then pair only with each other,
and one hands its connection to the other, so that the programs talk
directly. See doc/hosts.md.

top redraws each second on the terminal's alternate screen until q or
Ctrl-C: connections against the limit, pairs per second, refusals by
reason (per second and in total), and the waiting clients by key, longest
waiting first.

Exit status: 0 on success, 1 on failure, 2 for a bad command line.
`)
}
