package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/handover"
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
// instead (storeForUpgrade), since systemd restarts a service whose main
// process died rather than let another one take its place.

const (
	// keeperFlag runs the daemon as a keeper (hidden); keeperArmed, its
	// second stage, after the detaching fork.
	keeperFlag  = "--handover-keeper"
	keeperArmed = "--handover-keeper-armed"
	// envKeeper holds the new program's end of the keeper's pipe;
	// envKeeperFDs, for the keeper, how many descriptors it holds from 3.
	envKeeper    = "ONE_SOCKET_KEEPER"
	envKeeperFDs = "ONE_SOCKET_KEEPER_FDS"
	// keeperState is where the keeper's copy of the State is, as the
	// keeper sees it: descriptor 3, then the pipe, then the State's own.
	keeperState, keeperPipe, keeperFirst = 3, 4, 5
)

// startKeeper starts the keeper for h, whose descriptors are this
// process's, and returns the write end of its pipe, to pass across the
// exec, or -1 if no keeper could be started (the upgrade goes on without
// one). The keeper runs detached, in a session of its own, so that nobody
// has to reap it.
func (d *instance) startKeeper(h *handover.State) int {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		d.log.Warn("no keeper for the upgrade", "err", os.NewSyscallError("pipe2", err))
		return -1
	}
	// The keeper's copy of the State names the descriptors as the keeper
	// will have them: ExtraFiles puts them at 5, 6, ... in order.
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
		d.log.Warn("no keeper for the upgrade", "err", err)
		return -1
	}
	files := []*os.File{os.NewFile(uintptr(mfd), "state"), os.NewFile(uintptr(p[0]), "pipe")}
	for _, fd := range fds {
		files = append(files, os.NewFile(uintptr(fd), "handed"))
	}
	// This binary, by its link: the file at its path may be the new one.
	cmd := exec.Command("/proc/self/exe", append([]string{keeperFlag}, os.Args...)...)
	cmd.ExtraFiles = files
	cmd.Env = append(handover.WithoutEnv(os.Environ(), handover.EnvVar, envKeeper, envKeeperFDs), d.notify.Env()...)
	cmd.Env = append(cmd.Env, envKeeperFDs+"="+strconv.Itoa(len(files)))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// The first stage only forks the keeper proper and exits.
	err = cmd.Run()
	unix.Close(mfd)
	unix.Close(p[0])
	if err != nil {
		unix.Close(p[1])
		d.log.Warn("no keeper for the upgrade", "err", err)
		return -1
	}
	return p[1]
}

// releaseKeeper tells the keeper that the clients are served, and closes
// the pipe; -1 does nothing.
func releaseKeeper(fd int) {
	if fd >= 0 {
		unix.Write(fd, []byte{1})
		unix.Close(fd)
	}
}

// takeKeeper returns the keeper's pipe that $ONE_SOCKET_KEEPER names,
// marked close-on-exec, or -1; it unsets the variable.
func takeKeeper() int { return handover.TakeFD(envKeeper) }

// keep is the keeper: args are keeperFlag's or keeperArmed's and then the
// daemon's command line, argv[0] first.
func keep(stage string, args []string) int {
	if stage == keeperFlag {
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
		cmd := exec.Command("/proc/self/exe", append([]string{keeperArmed}, args...)...)
		cmd.Env = handover.WithoutEnv(os.Environ(), envKeeperFDs)
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
	env := handover.WithoutEnv(os.Environ(), handover.EnvVar, handover.EnvFailed, handover.EnvFallback, handover.EnvFallbackArgs)
	env = append(env, handover.EnvVar+"="+strconv.Itoa(keeperState),
		handover.EnvFailed+"=the new program died before it served; its keeper took the clients back")
	err := syscall.Exec("/proc/self/exe", args, env)
	fmt.Fprintf(os.Stderr, "one-socket: keeper: cannot take the clients back: %v\n", err)
	return 1
}
