package handover

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// CheckFlag makes the daemon check, and not start, the configuration
	// that the flags after it give: what an upgrade asks of the new binary
	// before handing anything over. Binaries before 0.2.0 do not know it.
	CheckFlag = "--handover-check"
	// EnvFallback holds a descriptor open on the previous program's
	// binary, which the new one executes, with the same State, if it
	// cannot start: the clients go back rather than away.
	EnvFallback = "ONE_SOCKET_FALLBACK"
	// EnvFallbackArgs holds the previous program's command line, as a
	// JSON array, for the exec that gives the clients back: the new
	// program may have been run with another.
	EnvFallbackArgs = "ONE_SOCKET_FALLBACK_ARGS"
	// EnvFailed tells the previous program, executed again, why the new
	// one gave the clients back.
	EnvFailed = "ONE_SOCKET_UPGRADE_FAILED"
)

// Fallback is the previous program, to give the clients back to.
type Fallback struct {
	FD   int      // open on its binary; -1 when there is none
	Args []string // its command line, argv[0] first
}

// FallbackEnv returns the variables that make the next program able to
// give its clients back: exeFD open on this program's binary, and args
// its command line.
func FallbackEnv(exeFD int, args []string) []string {
	b, _ := json.Marshal(args)
	return []string{EnvFallback + "=" + strconv.Itoa(exeFD), EnvFallbackArgs + "=" + string(b)}
}

// Exec executes the program that takes over s, in this process: the binary
// at path exe or, when exeFD is not -1, the one open on exeFD, with argv
// and env plus EnvVar. Every descriptor s names, and those in keep, stay
// open across the exec; nothing else of this process's does. Exec returns
// only if it failed, with every descriptor as it was.
func Exec(s *State, exe string, exeFD int, argv, env []string, keep ...int) error {
	mfd, err := s.Memfd("one-socket-handover", false)
	if err != nil {
		return fmt.Errorf("writing the handover: %w", err)
	}
	defer unix.Close(mfd)
	fds := append(append(s.FDs(), keep...), mfd)
	path := exe
	if exeFD >= 0 {
		// The binary by its descriptor, which names it even after it was
		// replaced or removed; open across the exec, as a script needs.
		path = "/proc/self/fd/" + strconv.Itoa(exeFD)
		exe = "the previous binary"
		fds = append(fds, exeFD)
	}
	if err := setCloexec(fds, false); err != nil {
		setCloexec(fds, true)
		return err
	}
	env = append(WithoutEnv(env, EnvVar), EnvVar+"="+strconv.Itoa(mfd))
	err = unix.Exec(path, argv, env)
	setCloexec(fds, true)
	return fmt.Errorf("exec %s: %w", exe, err)
}

// WithoutEnv returns env less the variables named.
func WithoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			if k == n {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// TakeFD returns the descriptor that the variable name holds, marked
// close-on-exec, or -1 when it is unset or names no open descriptor; it
// unsets the variable.
func TakeFD(name string) int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return -1
	}
	os.Unsetenv(name)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return -1
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return -1
	}
	unix.CloseOnExec(fd)
	return fd
}

// TakeFallback returns the previous program that $ONE_SOCKET_FALLBACK and
// $ONE_SOCKET_FALLBACK_ARGS describe, its descriptor marked close-on-exec,
// or one with FD -1; it unsets both.
func TakeFallback() Fallback {
	a := os.Getenv(EnvFallbackArgs)
	os.Unsetenv(EnvFallbackArgs)
	fd := TakeFD(EnvFallback)
	var args []string
	if fd < 0 || json.Unmarshal([]byte(a), &args) != nil || len(args) == 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return Fallback{FD: -1}
	}
	return Fallback{FD: fd, Args: args}
}

// setCloexec sets or clears FD_CLOEXEC on every fd.
func setCloexec(fds []int, on bool) error {
	flag := 0
	if on {
		flag = unix.FD_CLOEXEC
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flag); err != nil {
			return fmt.Errorf("descriptor %d: %w", fd, os.NewSyscallError("fcntl", err))
		}
	}
	return nil
}
