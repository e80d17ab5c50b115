package testutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Proc is a process a test runs in a process group of its own, so that
// killing it ends whatever it started too.
type Proc struct {
	Name  string
	Cmd   *exec.Cmd
	Log   *LockedBuffer // its standard output and error, unless the caller sent them elsewhere
	Err   error         // what Wait returned, once Done is closed
	done  chan struct{}
	group bool // it leads a process group of its own, which Kill kills
}

// StartProc starts cmd, called name in messages, with its output in Log
// (but a cmd.Stdout or cmd.Stderr the caller set is kept). At t's cleanup
// the process group is killed, and if t failed its log is printed.
func StartProc(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	log := &LockedBuffer{}
	if cmd.Stdout == nil {
		cmd.Stdout = log
	}
	if cmd.Stderr == nil {
		cmd.Stderr = log
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	return watch(t, name, cmd, log)
}

// WatchProc is StartProc for a cmd the caller has started itself: its
// output goes where the caller sent it (Log stays empty), and Kill kills
// its process group only if cmd made one (Setpgid), else the process.
func WatchProc(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	return watch(t, name, cmd, &LockedBuffer{})
}

func watch(t testing.TB, name string, cmd *exec.Cmd, log *LockedBuffer) *Proc {
	attr := cmd.SysProcAttr
	p := &Proc{Name: name, Cmd: cmd, Log: log, done: make(chan struct{}),
		group: attr != nil && attr.Setpgid && attr.Pgid == 0}
	go func() {
		p.Err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			if s := p.Log.String(); s != "" {
				t.Logf("log of %s:\n%s", p.Name, s)
			}
		}
	})
	return p
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill kills the process group (or the process, if it has no group of its
// own) and waits for the process to exit.
func (p *Proc) Kill() {
	if p.group {
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	} else {
		p.Cmd.Process.Kill()
	}
	<-p.done
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitFor polls cond until it holds, failing t if the process exits first.
// The minute's deadline only keeps a broken run from hanging the test;
// nothing here is a matter of speed.
func (p *Proc) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if p.Exited() {
			t.Fatalf("waiting for %s: %s ended (%v):\n%s", what, p.Name, p.Err, p.Log.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: it did not happen; log of %s:\n%s", what, p.Name, p.Log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RepoMain is the TestMain of a package anywhere in the module: it finds
// the module's root (the nearest directory up with a go.mod), makes a
// temporary directory named after prefix (short, so that socket paths
// under it fit in sun_path), hands both to setup, runs the tests unless
// setup fails, and removes the directory. name prefixes its errors. It
// returns the exit status for os.Exit.
func RepoMain(m *testing.M, name, prefix string, setup func(root, work string) error) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: cannot find the repository root: %v\n", name, err)
		return 1
	}
	work, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	defer os.RemoveAll(work)
	if err := setup(root, work); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return m.Run()
}

// moduleRoot returns the nearest directory from the current one up that
// holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("no go.mod in the current directory or above")
		}
		dir = up
	}
}
