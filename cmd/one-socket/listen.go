package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// probeTimeout bounds the connect() that tells a live broker from a stale
// socket file.
const probeTimeout = 2 * time.Second

// socketFile is a socket (broker or control) this process created. It remembers the
// file's device and inode so that, at exit, it removes only its own file
// and never one that somebody put in its place.
type socketFile struct {
	path     string
	abstract bool // '@name': no file, nothing to chmod or remove
	dev, ino uint64
}

// isAbstract reports whether path names a Linux abstract socket.
func isAbstract(path string) bool { return strings.HasPrefix(path, "@") }

// listen binds and listens on path and, for a socket file, gives it to
// group gid when gid is not -1 and applies mode. An existing socket file
// is replaced only if nothing answers on it; anything else at the path
// makes listen fail and stays untouched. The caller owns the listener;
// the listener never removes the file.
func listen(path string, mode fs.FileMode, gid int, log *slog.Logger) (*net.UnixListener, *socketFile, error) {
	if isAbstract(path) {
		// The kernel frees an abstract name when its last socket closes,
		// so a name in use always belongs to a live process.
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, nil, fmt.Errorf("another broker is listening on %s", path)
		}
		if err != nil {
			return nil, nil, err
		}
		return ln, &socketFile{path: path, abstract: true}, nil
	}
	if err := clearPath(path, log); err != nil {
		return nil, nil, err
	}
	return listenFile(path, mode, gid)
}

// listenFile makes the socket file at path so that no step follows a
// path another user could redirect: a user who may write the socket's
// directory could otherwise swap the new socket for a symbolic link
// between bind and chmod, and have the mode applied to any file. So there
// is no chmod: bind creates the file with its final mode, under a umask
// that leaves exactly those bits, and the group is set without following
// a link. The socket keeps path as its address, which clients see with
// getpeername, as they do with the original broker.
func listenFile(path string, mode fs.FileMode, gid int) (*net.UnixListener, *socketFile, error) {
	// The umask is the process's: nothing else creates files while the
	// daemon starts.
	old := unix.Umask(int(^mode.Perm() & 0o777))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if errors.Is(err, unix.EADDRINUSE) {
		return nil, nil, fmt.Errorf("another process bound %s while one-socket was starting", path)
	}
	if err != nil {
		return nil, nil, err
	}
	ln.SetUnlinkOnClose(false) // removal is socketFile.remove's job
	fail := func(err error) (*net.UnixListener, *socketFile, error) {
		ln.Close()
		return nil, nil, err
	}
	// The group after the mode: members of the daemon's own group (root's,
	// usually) may connect in between, nobody else. A chown does not clear
	// a socket's permission bits.
	if gid != -1 {
		if err := chownSocket(path, gid); err != nil {
			return fail(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); errors.Is(err, unix.ENOENT) || (err == nil && st.Mode&unix.S_IFMT != unix.S_IFSOCK) {
		return fail(errReplaced(path))
	} else if err != nil {
		return fail(os.NewSyscallError("lstat", err))
	}
	return ln, &socketFile{path: path, dev: st.Dev, ino: st.Ino}, nil
}

// errReplaced says that what the daemon bound at path is gone.
func errReplaced(path string) error {
	return fmt.Errorf("%s was removed or replaced while one-socket was starting", path)
}

// chownSocket gives the socket file just bound at path to group gid. A
// user who may write the directory can have put something else there
// since: a symbolic link, or a hard link to a file of root's (where
// fs.protected_hardlinks is 0), which a chown by path would give the
// group. So it opens path without following a link, changes the group
// through that descriptor only if it is a socket of the daemon's uid
// with one name, as a new socket is, and closes the descriptor.
func chownSocket(path string, gid int) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return errReplaced(path)
	}
	if err != nil {
		return fmt.Errorf("setting the socket's group: %w", os.NewSyscallError("open", err))
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("setting the socket's group: %w", os.NewSyscallError("fstat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Nlink != 1 || st.Uid != uint32(os.Geteuid()) {
		return errReplaced(path)
	}
	if err := unix.Fchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("setting the socket's group: %w", os.NewSyscallError("fchownat", err))
	}
	return nil
}

// clearPath makes path free for bind: nothing there is fine, a socket
// nobody listens on (left by a broker that died) is removed, and anything
// else is an error. It never removes something that is not a socket.
func clearPath(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(path)
		if _, err := os.Stat(dir); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("cannot create %s: directory %s does not exist", path, dir)
			}
			return fmt.Errorf("cannot create %s: %w", path, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%s); refusing to start and leaving it in place",
			path, describeType(fi.Mode()))
	}

	c, err := net.DialTimeout("unix", path, probeTimeout)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("another broker is listening on %s", path)
	case errors.Is(err, unix.ECONNREFUSED):
		// Nobody listens: a broker died without cleaning up.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing stale socket: %w", err)
		}
		log.Info("replaced a stale socket: nobody was listening on it", "path", path)
		return nil
	case errors.Is(err, unix.ENOENT):
		return nil // removed between Lstat and connect
	case errors.Is(err, unix.EAGAIN):
		// The listener's queue is full: somebody is listening, just busy.
		return fmt.Errorf("another broker is listening on %s (its queue is full)", path)
	default:
		return fmt.Errorf("cannot tell whether %s is in use, leaving it in place: %w", path, err)
	}
}

func describeType(m fs.FileMode) string {
	switch t := m.Type(); {
	case t == 0:
		return "a regular file"
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a socket"
}

// remove deletes the socket file if it is still the one listen created.
// It reports false, leaving the path alone, when the file is gone or has
// been replaced. A file swapped in between the check and the unlink would
// still be removed; only whoever can write the directory could do that.
func (sf *socketFile) remove() (bool, error) {
	if sf.abstract {
		return true, nil
	}
	fi, err := os.Lstat(sf.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode().Type() != fs.ModeSocket || uint64(st.Dev) != sf.dev || uint64(st.Ino) != sf.ino {
		return false, nil
	}
	if err := os.Remove(sf.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// listenerPath returns the address a listener is bound to: a file path,
// or "@name" for an abstract socket.
func listenerPath(ln *net.UnixListener) string {
	if a, ok := ln.Addr().(*net.UnixAddr); ok && a.Name != "" {
		return a.Name
	}
	return "(unnamed)"
}
