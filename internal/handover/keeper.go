package handover

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The keeper covers what no fallback can: a new binary that dies outright
// (killed, crashed in the runtime) after the exec and before it serves.
// Before the exec, the daemon starts a process of its own binary that
// holds copies of every descriptor of the hand-over and waits on a pipe
// whose write end the new program inherits. The new program writes one
// byte as it begins to serve, and the keeper exits, closing its copies. If
// the pipe ends without that byte, whoever held it died first: the keeper
// executes its binary with the State, which serves every client under the
// keeper's pid. Under systemd the file descriptor store does this job
// instead, since systemd restarts a service whose main process died
// rather than let another one take its place.

const (
	// KeeperFlag runs the daemon as a keeper (hidden); KeeperArmedFlag,
	// its second stage, after the detaching fork. Both go first, before
	// the daemon's command line.
	KeeperFlag      = "--handover-keeper"
	KeeperArmedFlag = "--handover-keeper-armed"
	// EnvKeeper holds the new program's end of the keeper's pipe;
	// envKeeperFDs, for the keeper, how many descriptors it holds from 3.
	EnvKeeper    = "ONE_SOCKET_KEEPER"
	envKeeperFDs = "ONE_SOCKET_KEEPER_FDS"
	// keeperState is where the keeper's copy of the State is, as the
	// keeper sees it: descriptor 3, then the pipe, then the State's own.
	keeperState, keeperPipe, keeperFirst = 3, 4, 5
)

// StartKeeper starts the keeper for h, whose descriptors are this
// process's, and returns the write end of its pipe, to pass across the
// exec in EnvKeeper. args is the daemon's command line, argv[0] first,
// for the keeper to execute again; env is added to the keeper's
// environment (the notify socket, once it was taken from it). The keeper
// runs detached, in a session of its own, so that nobody has to reap it.
func StartKeeper(h *State, args, env []string) (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, os.NewSyscallError("pipe2", err)
	}
	// The keeper's copy of the State names the descriptors as the keeper
	// will have them: at keeperFirst, keeperFirst+1, ... in order.
	fds := h.FDs()
	moved := h.Renumber(func(fd int) int {
		for i, f := range fds {
			if f == fd {
				return keeperFirst + i
			}
		}
		return -1
	})
	mfd, err := moved.Memfd("one-socket-keeper", false)
	if err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return -1, err
	}
	// Raw descriptors, not os.Files: an *os.File made of a descriptor the
	// daemon goes on using would close it when the collector finds the
	// File unreachable, under the engine's (or the exec's) feet.
	null, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(mfd)
		unix.Close(p[0])
		unix.Close(p[1])
		return -1, err
	}
	files := []uintptr{null.Fd(), 1, 2, uintptr(mfd), uintptr(p[0])}
	for _, fd := range fds {
		files = append(files, uintptr(fd))
	}
	env = append(append(WithoutEnv(os.Environ(), EnvVar, EnvKeeper, envKeeperFDs), env...),
		envKeeperFDs+"="+strconv.Itoa(len(files)-3))
	// This binary, by its link: the file at its path may be the new one.
	argv := append([]string{"/proc/self/exe", KeeperFlag}, args...)
	// The first stage only forks the keeper proper and exits.
	err = runStage(argv, env, files)
	null.Close()
	unix.Close(mfd)
	unix.Close(p[0])
	if err != nil {
		unix.Close(p[1])
		return -1, err
	}
	return p[1], nil
}

// runStage runs argv with files as its descriptors 0, 1, 2, ... (none of
// them closed here) and waits for it to exit, with status 0 or an error.
func runStage(argv, env []string, files []uintptr) error {
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{Env: env, Files: files})
	if err != nil {
		return &os.PathError{Op: "fork/exec", Path: argv[0], Err: err}
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err != nil:
		return os.NewSyscallError("wait4", err)
	case !ws.Exited() || ws.ExitStatus() != 0:
		return fmt.Errorf("keeper: first stage: %v", ws)
	}
	return nil
}

// ReleaseKeeper tells the keeper that the clients are served, and closes
// the pipe; -1 does nothing.
func ReleaseKeeper(fd int) {
	if fd >= 0 {
		unix.Write(fd, []byte{1})
		unix.Close(fd)
	}
}

// TakeKeeper returns the keeper's pipe that $ONE_SOCKET_KEEPER names,
// marked close-on-exec, or -1; it unsets the variable.
func TakeKeeper() int { return TakeFD(EnvKeeper) }

// RunKeeper is the keeper, and returns its exit status: stage is
// KeeperFlag or KeeperArmedFlag, and args the daemon's command line,
// argv[0] first. It returns only if the clients were served or cannot be
// taken back; otherwise it executes the daemon with them.
func RunKeeper(stage string, args []string) int {
	if stage == KeeperFlag {
		// Fork the keeper proper in a session of its own and return, so
		// that the daemon reaps this stage at once.
		n, err := strconv.Atoi(os.Getenv(envKeeperFDs))
		if err != nil || n < 2 {
			fmt.Fprintf(os.Stderr, "one-socket: keeper: %s=%q\n", envKeeperFDs, os.Getenv(envKeeperFDs))
			return 1
		}
		var files []*os.File
		for i := range n {
			files = append(files, os.NewFile(uintptr(3+i), "kept"))
		}
		cmd := exec.Command("/proc/self/exe", append([]string{KeeperArmedFlag}, args...)...)
		cmd.Env = WithoutEnv(os.Environ(), envKeeperFDs)
		cmd.ExtraFiles = files
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "one-socket: keeper: %v\n", err)
			return 1
		}
		return 0
	}
	var b [1]byte
	pipe := os.NewFile(keeperPipe, "pipe")
	n, _ := io.ReadFull(pipe, b[:])
	pipe.Close()
	if n == 1 || len(args) == 0 {
		return 0 // served: the copies close with this process
	}
	// The program that took the clients over died before it served them.
	env := WithoutEnv(os.Environ(), EnvVar, EnvFailed, EnvFallback, EnvFallbackArgs)
	env = append(env, EnvVar+"="+strconv.Itoa(keeperState),
		EnvFailed+"=the new program died before it served; its keeper took the clients back")
	err := syscall.Exec("/proc/self/exe", args, env)
	fmt.Fprintf(os.Stderr, "one-socket: keeper: cannot take the clients back: %v\n", err)
	return 1
}
