package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A proc is a program a configuration started, in a process group of its
// own so that killing it also ends what it started (the command of
// one-socketctl pair -- CMD).
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its standard output, by line
	done  chan struct{}
	err   error // what Wait returned, once done is closed
}

// startProc starts argv with env added to this process's environment.
func startProc(name string, env []string, argv ...string) (*proc, error) {
	p := &proc{name: name, lines: make(chan string, 16), done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stderr = os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			p.lines <- s.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// expect waits for the line want on p's standard output.
func (p *proc) expect(want string, wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				return fmt.Errorf("%s ended before saying %q: %v", p.name, want, p.err)
			}
			if l == want {
				return nil
			}
		case <-t.C:
			return fmt.Errorf("%s did not say %q within %v", p.name, want, wait)
		}
	}
}

// finish closes p's standard input and waits for it to exit, killing its
// process group if it takes longer than wait.
func (p *proc) finish(wait time.Duration) error {
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(wait):
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not exit within %v; killed", p.name, wait)
	}
	if p.err != nil {
		return fmt.Errorf("%s: %v", p.name, p.err)
	}
	return nil
}

// kill ends p's process group at once, for a run that failed.
func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
}

// memory returns a process's resident set and proportional set size, in
// KiB. PSS divides shared pages (the executable's, libc's) among the
// processes mapping them.
func memory(pid int) (rss, pss int, err error) {
	if rss, err = procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:"); err != nil {
		return 0, 0, err
	}
	pss, err = procField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	return rss, pss, err
}

// procField returns the number after name in a /proc file of "Name: N kB"
// lines.
func procField(path, name string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(l)); len(f) >= 2 && f[0] == name {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, name)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times on Linux.
const clockTicks = 100

// cpuTime returns a process's user and system time, all threads.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces; fields count
	// from after it: utime and stime are the 14th and 15th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}
