package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/scm"
)

// Restart without loss: on SIGUSR2 or the control command "upgrade" the
// daemon hands its broker over (internal/broker's Handover), describes the
// state in a memfd, and re-executes the binary at the path it was started
// from, in the same process; the new program finds the memfd in
// $ONE_SOCKET_HANDOVER and serves the same sockets and clients.

const (
	// handoverVersion is the format of the handover description; a
	// binary that prints another one for --handover-version is refused.
	handoverVersion = 1
	// handoverFlag makes the daemon print handoverVersion and exit.
	handoverFlag = "--handover-version"
	// envHandover names the memfd holding the description.
	envHandover = "ONE_SOCKET_HANDOVER"
	// versionCheckTimeout bounds the run of the new binary's check.
	versionCheckTimeout = 5 * time.Second
	// maxHandover bounds the description read at start.
	maxHandover = 256 << 20
)

// handover is the description passed to the new program.
type handover struct {
	Version   int                 `json:"version"`
	Exe       string              `json:"exe"`
	Listener  int                 `json:"listener"`
	Control   int                 `json:"control"` // -1 without a control socket
	PidFile   int                 `json:"pidfile"` // -1 without --pidfile
	PidPath   string              `json:"pidfile_path,omitempty"`
	Socket    handedSocket        `json:"socket"`
	CtlSocket handedSocket        `json:"control_socket"`
	Activated bool                `json:"activated"` // the broker socket came from the service manager
	Started   time.Time           `json:"started"`
	LogLevel  string              `json:"log_level"`
	LogFile   string              `json:"log_file,omitempty"` // as settled at the first start (absolute after --detach)
	Conns     []broker.HandedConn `json:"conns"`
}

// handedSocket is a socket's path and, when this daemon created its file,
// what identifies the file for removal at exit.
type handedSocket struct {
	Path     string `json:"path"`
	Created  bool   `json:"created"`
	Abstract bool   `json:"abstract,omitempty"`
	Dev      uint64 `json:"dev,omitempty"`
	Ino      uint64 `json:"ino,omitempty"`
}

func describeSocket(path string, sf *socketFile) handedSocket {
	if sf == nil {
		return handedSocket{Path: path}
	}
	return handedSocket{Path: path, Created: true, Abstract: sf.abstract, Dev: sf.dev, Ino: sf.ino}
}

func (h handedSocket) file() *socketFile {
	if !h.Created {
		return nil
	}
	return &socketFile{path: h.Path, abstract: h.Abstract, dev: h.Dev, ino: h.Ino}
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

// checkHandoverVersion runs exe --handover-version and fails unless it
// prints handoverVersion.
func checkHandoverVersion(exe string) error {
	if exe == "" {
		return errors.New("the daemon's binary path is unknown")
	}
	ctx, cancel := context.WithTimeout(context.Background(), versionCheckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, handoverFlag)
	cmd.Env = os.Environ()
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: no answer within %v", exe, handoverFlag, versionCheckTimeout)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", exe, handoverFlag, err)
	}
	got := strings.TrimSpace(string(out))
	if got != strconv.Itoa(handoverVersion) {
		return fmt.Errorf("%s speaks handover version %q, this daemon %d", exe, got, handoverVersion)
	}
	return nil
}

// takeHandover reads the description named by $ONE_SOCKET_HANDOVER, if
// set, unsets the variable and closes the memfd.
func takeHandover() (*handover, error) {
	v, ok := os.LookupEnv(envHandover)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(envHandover)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", envHandover, v)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "handover")
	defer f.Close()
	var h handover
	if err := readDescription(f, &h); err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	if h.Version != handoverVersion {
		return nil, fmt.Errorf("handover version %d, expected %d", h.Version, handoverVersion)
	}
	if h.Listener < 3 {
		return nil, fmt.Errorf("handover: bad listener descriptor %d", h.Listener)
	}
	fds := []int{h.Listener}
	if h.Control >= 0 {
		fds = append(fds, h.Control)
	}
	if h.PidFile >= 0 {
		fds = append(fds, h.PidFile)
	}
	for _, c := range h.Conns {
		fds = append(fds, c.FD)
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("handover: descriptor %d: %w", fd, err)
		}
		unix.CloseOnExec(fd)
	}
	return &h, nil
}

// readDescription decodes the JSON in memfd f into v, refusing fields v
// does not have: a description this program cannot read in full is not
// taken over at all.
func readDescription(f *os.File, v any) error {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, maxHandover))
	if err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed: %w", err)
	}
	return nil
}

// setCloexec sets or clears FD_CLOEXEC on every fd.
func setCloexec(fds []int, on bool) error {
	flag := 0
	if on {
		flag = unix.FD_CLOEXEC
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flag); err != nil {
			return fmt.Errorf("descriptor %d: %w", fd, err)
		}
	}
	return nil
}

// requestUpgrade is the control command's Upgrade: it checks the binary and
// asks the serve loop to upgrade; the loop runs after the reply is sent.
func (d *instance) requestUpgrade() error {
	if err := checkHandoverVersion(d.exe); err != nil {
		d.log.Warn("upgrade refused", "trigger", "control", "err", err)
		return fmt.Errorf("upgrade refused: %w", err)
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
		if err := checkHandoverVersion(d.exe); err != nil {
			log.Warn("upgrade refused", "trigger", trigger, "err", err)
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
		return err
	}
	err = d.exec(st, ctlFD)
	// Still here: serve the State again in this process.
	d.ready()
	if rerr := d.resume(st, ctlFD); rerr != nil {
		log.Error("cannot resume after the failed upgrade", "err", rerr)
		return errors.Join(err, rerr)
	}
	log.Warn("upgrade failed; serving on", "err", err)
	return err
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
	// The control socket: dup the listener, then close the server.
	ctlFD := -1
	if d.ctl != nil {
		if d.ctlListener != nil {
			if ctlFD, err = scm.Dup(d.ctlListener); err != nil {
				d.log.Warn("cannot keep the control socket", "err", err)
				ctlFD = -1
			}
		}
		d.ctl.Close()
		if d.ctlServed != nil {
			<-d.ctlServed
			d.ctlServed = nil
		}
		d.ctl, d.ctlListener = nil, nil
	}
	return st, ctlFD, nil
}

// exec writes the description and re-executes; it returns only on error.
func (d *instance) exec(st *broker.State, ctlFD int) error {
	h := handover{
		Version:   handoverVersion,
		Exe:       d.exe,
		Listener:  st.Listener,
		Control:   ctlFD,
		PidFile:   -1,
		Socket:    describeSocket(d.brokerPath, d.brokerSock),
		CtlSocket: describeSocket(d.ctlPath, d.ctlSock),
		Activated: d.activated,
		Started:   d.started,
		LogLevel:  d.level.Level().String(),
		LogFile:   d.cfg.logFile,
		Conns:     st.Conns,
	}
	fds := []int{st.Listener}
	if ctlFD >= 0 {
		fds = append(fds, ctlFD)
	}
	if d.pidf != nil && d.pidf.f != nil {
		h.PidFile = int(d.pidf.f.Fd())
		h.PidPath = d.pidf.path
		fds = append(fds, h.PidFile)
	}
	for _, c := range st.Conns {
		fds = append(fds, c.FD)
	}
	data, err := json.Marshal(&h)
	if err != nil {
		return err
	}
	mfd, err := unix.MemfdCreate("one-socket-handover", 0)
	if err != nil {
		return fmt.Errorf("memfd_create: %w", err)
	}
	defer unix.Close(mfd)
	if err := writeAll(mfd, data); err != nil {
		return fmt.Errorf("writing the handover: %w", err)
	}
	if err := setCloexec(fds, false); err != nil {
		setCloexec(fds, true)
		return err
	}
	env := []string{envHandover + "=" + strconv.Itoa(mfd)}
	// Unset at start; the new program needs it for READY=1.
	env = append(env, d.notify.Env()...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envHandover+"=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(d.exe, os.Args, env)
	setCloexec(fds, true)
	return fmt.Errorf("exec %s: %w", d.exe, err)
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// resume serves st (and the control socket on ctlFD, if not -1) with a new
// broker, as adopt does after an exec.
func (d *instance) resume(st *broker.State, ctlFD int) error {
	b, err := broker.New(d.brokerConfig())
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
		d.ctlLn = ln
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
	if d.policy.path != "" && d.b != nil {
		if a, _, err := d.policy.load(); err == nil {
			c.Authorizer = a
		}
	}
	return &c
}

// adopt is run's second half after an upgrade: it serves what the previous
// program handed over instead of creating sockets and the pid file.
func (d *instance) adopt(sigs, hups, usr2 chan os.Signal, nofile uint64) int {
	h := d.ho
	d.ho = nil
	d.activated = h.Activated
	d.brokerSock, d.ctlSock = h.Socket.file(), h.CtlSocket.file()
	if h.PidFile >= 0 {
		d.pidf = &pidFile{path: h.PidPath, f: os.NewFile(uintptr(h.PidFile), h.PidPath)}
	}
	if h.Control >= 0 {
		ln, err := fileListener(h.Control, "control")
		if err != nil {
			d.log.Warn("cannot serve the inherited control socket", "err", err)
		} else {
			d.ctlLn = ln
		}
	}
	st := &broker.State{Listener: h.Listener, Conns: h.Conns}
	d.served = make(chan error, 1)
	go func() { d.served <- d.b.ServeState(st) }()
	d.started = h.Started
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(h.LogLevel)); err == nil {
		d.level.Set(lvl)
	}
	d.stopReq = make(chan struct{}, 1)
	d.startControl()
	d.log.Info("upgraded", "clients", len(h.Conns), "pid", os.Getpid(), "version", versionString(),
		"socket", d.brokerPath, "nofile", nofile)
	d.ready()
	return d.serve(sigs, hups, usr2)
}
