// Package handover is the one format in which a daemon describes its state
// to the program that takes over: in an upgrade, the same process after
// exec(2), which finds a memfd through $ONE_SOCKET_HANDOVER; in a restart
// under systemd, the next instance, which gets a sealed memfd back from the
// file descriptor store. Both are one JSON document, State.
//
// The format is a contract between releases: every field has an explicit
// name, and the golden files in testdata, written by v0.1.0, must decode
// to the same State and encode to the same document. A change that needs
// another document is a new Version, which readers must learn first.
//
// Around the format, the package holds how each hand-over is carried: the
// exec of an upgrade and the fallback to the previous binary (exec.go),
// the upgrade's keeper (keeper.go), and, under systemd, what the service
// manager passes back and under which names (passed.go), what a stop puts
// in its file descriptor store and how a start takes it back (fdstore.go,
// store.go), and the waiting clients kept there for a crash (crash.go).
// internal/systemd carries the messages; the engine, internal/broker,
// knows none of this.
package handover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	spb "github.com/one-socket/one-socket/libspbroker"
)

const (
	// Version is the format written and read. v0.1.0 wrote 1 and checks,
	// before an upgrade, that the new binary prints exactly "1" for
	// VersionFlag.
	Version = 1
	// VersionFlag makes the daemon print Version and exit: the check an
	// upgrade runs on the new binary first.
	VersionFlag = "--handover-version"
	// EnvVar holds the number of the memfd an upgrade passes across exec.
	EnvVar = "ONE_SOCKET_HANDOVER"
	// maxSize bounds what is read: about 200 bytes a client, for a
	// million of them.
	maxSize = 256 << 20
)

// State is the whole description. An upgrade fills Process; a stop into
// the file descriptor store fills Saved and Counts instead. Fields that a
// kind does not use are left out of its document, which is then exactly
// what v0.1.0 wrote for it.
type State struct {
	Version int `json:"version"`
	// Saved is when a stop stored the clients: their waits go on while no
	// daemon runs.
	Saved    time.Time `json:"saved,omitzero"`
	*Process           // nil in the store
	Conns    []Conn    `json:"conns"`
	Counts   *Counts   `json:"counts,omitempty"` // nil in an upgrade
	// Totals are the engine's counters so far, so that they cover the
	// daemon's whole run. Absent in what v0.1.0 wrote; written only for
	// a program known to read them (see Legacy).
	Totals *Totals `json:"totals,omitempty"`
}

// Totals are an engine's counters, by name.
type Totals struct {
	Accepted       uint64            `json:"accepted"`
	Paired         uint64            `json:"paired"`
	Refused        uint64            `json:"refused"`
	Shed           uint64            `json:"shed"`
	TimedOut       uint64            `json:"timed_out"`
	Vanished       uint64            `json:"vanished"`
	Denied         uint64            `json:"denied"`
	OverQuota      uint64            `json:"over_quota"`
	Expired        uint64            `json:"expired"`
	Upgrades       uint64            `json:"upgrades,omitempty"`        // upgrades in place so far
	ProtocolErrors map[string]uint64 `json:"protocol_errors,omitempty"` // by kind name
}

// TotalsOf describes an engine's counters.
func TotalsOf(s broker.Stats) *Totals {
	return &Totals{Accepted: s.Accepted, Paired: s.Paired, Refused: s.Refused, Shed: s.Shed,
		TimedOut: s.TimedOut, Vanished: s.Vanished, Denied: s.Denied, OverQuota: s.OverQuota,
		Expired: s.Expired, Upgrades: s.Upgrades, ProtocolErrors: s.ProtocolErrorsByName()}
}

// Stats is t as an engine's counters, for broker.Carry; nil is none.
func (t *Totals) Stats() broker.Stats {
	if t == nil {
		return broker.Stats{}
	}
	s := broker.Stats{Accepted: t.Accepted, Paired: t.Paired, Refused: t.Refused, Shed: t.Shed,
		TimedOut: t.TimedOut, Vanished: t.Vanished, Denied: t.Denied, OverQuota: t.OverQuota, Expired: t.Expired,
		Upgrades: t.Upgrades}
	s.SetProtocolErrorsByName(t.ProtocolErrors)
	return s
}

// Process is what an upgrade in place passes besides the clients: the
// descriptors of the process's own sockets and pid file, which survive
// exec, and what it knew about them.
type Process struct {
	Exe       string    `json:"exe"`      // the binary, as the first start resolved it
	Listener  int       `json:"listener"` // the broker socket
	Control   int       `json:"control"`  // -1 without a control socket
	PidFile   int       `json:"pidfile"`  // -1 without --pidfile
	PidPath   string    `json:"pidfile_path,omitempty"`
	Socket    Socket    `json:"socket"`
	CtlSocket Socket    `json:"control_socket"`
	Activated bool      `json:"activated"` // the broker socket came from the service manager
	Started   time.Time `json:"started"`
	LogLevel  string    `json:"log_level"`
	LogFile   string    `json:"log_file,omitempty"` // as settled at the first start
}

// Socket is a socket's path and, when the daemon created its file, what
// identifies that file for removal at exit.
type Socket struct {
	Path     string `json:"path"`
	Created  bool   `json:"created"`
	Abstract bool   `json:"abstract,omitempty"`
	Dev      uint64 `json:"dev,omitempty"`
	Ino      uint64 `json:"ino,omitempty"`
}

// Conn is one client. Its names are capitalized because v0.1.0 wrote the
// engine's field names as they were; they are fixed here, apart from the
// engine's, so that renaming an engine field changes nothing on disk.
type Conn struct {
	// Ino is the inode of the client's socket, which finds its descriptor
	// among those the store passes back, in any order. Store only.
	Ino      uint64        `json:"ino,omitzero"`
	FD       int           `json:"FD"` // the descriptor in the process that wrote it
	Waiting  bool          `json:"Waiting"`
	Key      []byte        `json:"Key"`
	Mode     spb.Mode      `json:"Mode"`
	UID      uint32        `json:"UID"`
	Since    time.Duration `json:"Since"`
	Partial  []byte        `json:"Partial"`
	Consumed int           `json:"Consumed"`
	// Stored names the client's own copy in the file descriptor store
	// (FDNAME=w<Stored>), kept for a crash; Reread, that its request is to
	// be read again from its socket. Neither is in what v0.1.0 wrote, nor
	// written for it: it refuses fields it does not know.
	Stored uint64 `json:"stored,omitempty"`
	Reread bool   `json:"reread,omitempty"`
}

// Counts is what a stop put in the store, for the next start's log line.
type Counts struct {
	Clients   int `json:"clients"`
	Listeners int `json:"listeners"`
}

// FromEngine describes one of the engine's connections.
func FromEngine(h broker.HandedConn) Conn {
	return Conn{FD: h.FD, Waiting: h.Waiting, Key: h.Key, Mode: h.Mode, UID: h.UID,
		Since: h.Since, Partial: h.Partial, Consumed: h.Consumed, Stored: h.Stored, Reread: h.Reread}
}

// Engine is the connection as the engine takes it, on descriptor fd.
func (c Conn) Engine(fd int) broker.HandedConn {
	return broker.HandedConn{FD: fd, Waiting: c.Waiting, Key: c.Key, Mode: c.Mode, UID: c.UID,
		Since: c.Since, Partial: c.Partial, Consumed: c.Consumed, Stored: c.Stored, Reread: c.Reread}
}

// Decode reads one State from r, refusing fields it does not know and any
// other version: a description this program cannot read in full is not
// taken over at all.
func Decode(r io.Reader) (*State, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("larger than %d bytes", maxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s State
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("malformed: %w", err)
	}
	if dec.More() {
		return nil, errors.New("malformed: more than one document")
	}
	if s.Version != Version {
		return nil, fmt.Errorf("version %d, this daemon reads %d", s.Version, Version)
	}
	return &s, nil
}

// Memfd returns a new close-on-exec memfd holding s; with seal, sealed
// against any change, as what goes into the store must be.
func (s *State) Memfd(name string, seal bool) (int, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return -1, err
	}
	flags := unix.MFD_CLOEXEC
	if seal {
		flags |= unix.MFD_ALLOW_SEALING
	}
	mfd, err := unix.MemfdCreate(name, flags)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	for len(data) > 0 {
		n, err := unix.Write(mfd, data)
		if err != nil {
			unix.Close(mfd)
			return -1, fmt.Errorf("writing the description: %w", os.NewSyscallError("write", err))
		}
		data = data[n:]
	}
	if seal {
		seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
		if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, seals); err != nil {
			unix.Close(mfd)
			return -1, os.NewSyscallError("fcntl", err)
		}
	}
	return mfd, nil
}

// FDs returns every descriptor an upgrade's State names: the process's
// own, then the clients'.
func (s *State) FDs() []int {
	var fds []int
	if p := s.Process; p != nil {
		fds = append(fds, p.Listener)
		if p.Control >= 0 {
			fds = append(fds, p.Control)
		}
		if p.PidFile >= 0 {
			fds = append(fds, p.PidFile)
		}
	}
	for _, c := range s.Conns {
		fds = append(fds, c.FD)
	}
	return fds
}

// Renumber returns a copy of s whose descriptors are those that to maps
// s's to, for a process that holds them at other numbers.
func (s *State) Renumber(to func(int) int) *State {
	c := *s
	if s.Process != nil {
		p := *s.Process
		p.Listener = to(p.Listener)
		if p.Control >= 0 {
			p.Control = to(p.Control)
		}
		if p.PidFile >= 0 {
			p.PidFile = to(p.PidFile)
		}
		c.Process = &p
	}
	c.Conns = make([]Conn, len(s.Conns))
	for i, conn := range s.Conns {
		conn.FD = to(conn.FD)
		c.Conns[i] = conn
	}
	return &c
}

// Take reads the upgrade's State named by $ONE_SOCKET_HANDOVER, or returns
// nil when it is unset. It unsets the variable, closes the memfd, checks
// that every descriptor named is open and marks each close-on-exec.
func Take() (*State, error) {
	v, ok := os.LookupEnv(EnvVar)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvVar)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", EnvVar, v)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "handover")
	defer f.Close()
	s, err := Decode(io.NewSectionReader(f, 0, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	if s.Process == nil || s.Listener < 3 {
		return nil, errors.New("handover: no listening socket in the description")
	}
	for _, fd := range s.FDs() {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("handover: descriptor %d: %w", fd, os.NewSyscallError("fcntl", err))
		}
		unix.CloseOnExec(fd)
	}
	return s, nil
}

// CheckProgram runs exe VersionFlag, for at most timeout, and fails unless
// it prints Version: a binary that reads another format must not be
// exec'd into, since it could not take the clients over.
func CheckProgram(exe string, timeout time.Duration) error {
	out, _, err := probe(exe, timeout, VersionFlag)
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(out); got != strconv.Itoa(Version) {
		return fmt.Errorf("%s speaks handover version %q, this daemon %d", exe, got, Version)
	}
	return nil
}

// CheckConfig runs exe CheckFlag args, for at most timeout: the new binary
// says whether it would start with the daemon's command line args. It
// reports legacy, and no error, for a binary older than CheckFlag, which
// cannot say (and reads only what v0.1.0 wrote).
func CheckConfig(exe string, args []string, timeout time.Duration) (legacy bool, err error) {
	_, stderr, err := probe(exe, timeout, append([]string{CheckFlag}, args...)...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return false, nil
	case !errors.As(err, &exit):
		return false, err
	case strings.Contains(stderr, "flag provided but not defined: -"+strings.TrimLeft(CheckFlag, "-")):
		return true, nil
	}
	return false, fmt.Errorf("the new program would not start: %s", strings.TrimSpace(stderr))
}

// probe runs exe with args for at most timeout and returns what it
// printed; the error says which probe failed and how. A probe killed by
// the signal that asked for the upgrade, before it could ignore it, is
// run again.
func probe(exe string, timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	for try := 0; ; try++ {
		stdout, stderr, err = probeOnce(exe, timeout, args...)
		var exit *exec.ExitError
		if try < 2 && errors.As(err, &exit) {
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && (ws.Signal() == syscall.SIGUSR2 || ws.Signal() == syscall.SIGHUP) {
				continue
			}
		}
		return stdout, stderr, err
	}
}

func probeOnce(exe string, timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	if exe == "" {
		return "", "", errors.New("the daemon's binary path is unknown")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		return "", "", fmt.Errorf("%s %s: no answer within %v", exe, args[0], timeout)
	}
	if err != nil {
		err = fmt.Errorf("%s %s: %w", exe, args[0], err)
	}
	return out.String(), errOut.String(), err
}
