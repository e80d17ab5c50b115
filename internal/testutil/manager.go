package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
)

// Manager plays systemd's part for a service with a file descriptor store,
// for the tests and the restart benchmark (systemd-socket-activate has no
// store). It may own the broker and control sockets, as socket units do;
// it reads notify messages, keeps the descriptors of FDSTORE=1 messages
// under their FDNAME (dropping duplicates, and at each start any whose
// peer hung up, as systemd does), removes them at FDSTOREREMOVE=1 and
// answers BARRIER=1; and it starts each instance with the sockets and
// then the store in LISTEN_FDS.
type Manager struct {
	BrokerPath, CtlPath, NotifyPath string

	sockets []*os.File // passed first, named broker and control
	notify  *net.UnixConn
	msgs    chan string
	done    chan struct{}

	mu    sync.Mutex
	store []stored
	held  map[fileID]bool // the files in store
}

type stored struct {
	f    *os.File
	name string
	id   fileID
}

// fileID identifies an open file, as systemd tells duplicates apart.
type fileID struct{ dev, ino uint64 }

func idOf(fd int) (fileID, error) {
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return fileID{}, err
	}
	return fileID{s.Dev, s.Ino}, nil
}

// NewManager returns a Manager whose sockets live in dir; with sockets it
// listens on BrokerPath and CtlPath itself, and passes them to each
// instance as "broker" and "control".
func NewManager(dir string, sockets bool) (*Manager, error) {
	m := &Manager{
		BrokerPath: filepath.Join(dir, "one.socket"),
		CtlPath:    filepath.Join(dir, "one.ctl"),
		NotifyPath: filepath.Join(dir, "notify"),
		msgs:       make(chan string, 1<<16),
		done:       make(chan struct{}),
		held:       map[fileID]bool{},
	}
	if sockets {
		for _, p := range []string{m.BrokerPath, m.CtlPath} {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				m.closeSockets()
				return nil, err
			}
			f, err := ln.File()
			// f holds the socket; the file stays, as with a socket unit.
			ln.SetUnlinkOnClose(false)
			ln.Close()
			if err != nil {
				m.closeSockets()
				return nil, err
			}
			m.sockets = append(m.sockets, f)
		}
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: m.NotifyPath, Net: "unixgram"})
	if err != nil {
		m.closeSockets()
		return nil, err
	}
	m.notify = c
	go m.receive()
	return m, nil
}

func (m *Manager) closeSockets() {
	for _, f := range m.sockets {
		f.Close()
	}
}

// Close stops reading notify messages and closes the sockets and the store.
func (m *Manager) Close() {
	m.notify.Close()
	<-m.done
	m.closeSockets()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.store {
		m.dropLocked(s)
	}
	m.store = nil
}

// receive handles notify messages until the socket closes.
func (m *Manager) receive() {
	defer close(m.done)
	buf := make([]byte, 4096)
	oob := make([]byte, scm.OOBSize)
	for {
		n, oobn, _, _, err := m.notify.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		// What cannot be parsed is systemd's to ignore too; the
		// descriptors read are handled below either way.
		fds, _ := scm.Rights(oob[:oobn])
		text := string(buf[:n])
		vars := map[string]string{}
		for line := range strings.SplitSeq(text, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				vars[k] = v
			}
		}
		m.mu.Lock()
		switch {
		case vars["FDSTORE"] == "1":
			name := vars["FDNAME"]
			if name == "" {
				name = "stored"
			}
			for _, fd := range fds {
				m.addLocked(os.NewFile(uintptr(fd), name), name)
			}
		case vars["FDSTOREREMOVE"] == "1":
			kept := m.store[:0]
			for _, s := range m.store {
				if s.name == vars["FDNAME"] {
					m.dropLocked(s)
				} else {
					kept = append(kept, s)
				}
			}
			m.store = kept
		default:
			// BARRIER=1's pipe, and anything else: closing is the answer.
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		m.mu.Unlock()
		select {
		case m.msgs <- text:
		default: // nobody is reading them: drop the oldest news
		}
	}
}

// addLocked stores f under name unless its file is stored already; the
// store owns f either way.
func (m *Manager) addLocked(f *os.File, name string) {
	id, err := idOf(int(f.Fd()))
	if err != nil || m.held[id] {
		f.Close()
		return
	}
	m.held[id] = true
	m.store = append(m.store, stored{f, name, id})
}

// dropLocked closes a stored descriptor; the caller takes it out of store.
func (m *Manager) dropLocked(s stored) {
	delete(m.held, s.id)
	s.f.Close()
}

// Add puts f in the store under name, as if a service had stored it; the
// store owns f from then on.
func (m *Manager) Add(f *os.File, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addLocked(f, name)
}

// Names returns the FDNAME of every stored descriptor, in order.
func (m *Manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n []string
	for _, s := range m.store {
		n = append(n, s.name)
	}
	return n
}

// Count returns how many stored descriptors are named name.
func (m *Manager) Count(name string) int {
	n := 0
	for _, s := range m.Names() {
		if s == name {
			n++
		}
	}
	return n
}

// WaitFor returns the first notify message from now on that contains
// want.
func (m *Manager) WaitFor(want string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case msg := <-m.msgs:
			if strings.Contains(msg, want) {
				return msg, nil
			}
		case <-deadline:
			return "", fmt.Errorf("no notify message with %q within %v", want, timeout)
		}
	}
}

// Start starts bin with args as systemd would start the service: env plus
// NOTIFY_SOCKET; the sockets first and the store after them, from
// descriptor 3 on, named in LISTEN_FDNAMES; LISTEN_PID the instance's own
// pid (a shell sets it and execs). Stored connections whose peer hung up
// are dropped first. cmd's output settings are the caller's.
func (m *Manager) Start(cmd *exec.Cmd, env []string) error {
	if cmd.Path == "" || len(cmd.Args) == 0 {
		return errors.New("manager: no command")
	}
	m.mu.Lock()
	kept := m.store[:0]
	for _, s := range m.store {
		pfd := []unix.PollFd{{Fd: int32(s.f.Fd())}}
		if k, _ := unix.Poll(pfd, 0); k > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			m.dropLocked(s)
			continue
		}
		kept = append(kept, s)
	}
	m.store = kept
	files := append([]*os.File{}, m.sockets...)
	var names []string
	if len(m.sockets) > 0 {
		names = []string{"broker", "control"}
	}
	// Duplicates, so that the store may drop its copies at any time.
	var dups []*os.File
	var dupErr error
	for _, s := range m.store {
		fd, err := unix.FcntlInt(s.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			dupErr = err
			break
		}
		dups = append(dups, os.NewFile(uintptr(fd), s.name))
		names = append(names, s.name)
	}
	m.mu.Unlock()
	defer func() {
		for _, f := range dups {
			f.Close()
		}
	}()
	if dupErr != nil {
		return fmt.Errorf("manager: %w", dupErr)
	}
	files = append(files, dups...)

	env = append(env, "NOTIFY_SOCKET="+m.NotifyPath)
	script := `exec "$@"`
	if len(files) > 0 {
		env = append(env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		script = `export LISTEN_PID=$$; exec "$@"`
	}
	argv := append([]string{"/bin/sh", "-c", script, "sh", cmd.Path}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = "/bin/sh", argv
	cmd.Env = env
	cmd.ExtraFiles = files
	return cmd.Start()
}
