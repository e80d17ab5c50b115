package main

import (
	"crypto/rand"
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

// privateSocket is the socket's name in listenFile's private directory.
const privateSocket = "s"

// listenFile makes the socket file at path so that no step follows a
// path another user could redirect: a user who may write the socket's
// directory could otherwise swap the new socket for a symbolic link
// between bind and chmod, and have the mode applied to any file. The
// socket is bound in a new directory of its own, 0700 and reached only
// through its descriptor, given its group and mode there, and then moved
// into place; it appears at path complete, and the move fails rather than
// replace anything that was put at path meanwhile.
func listenFile(path string, mode fs.FileMode, gid int) (ln *net.UnixListener, sf *socketFile, err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the socket's directory %s: %w", dir, os.NewSyscallError("open", err))
	}
	defer unix.Close(dfd)
	pname, pfd, err := privateDir(dfd)
	if err != nil {
		return nil, nil, fmt.Errorf("making a private directory in %s: %w", dir, err)
	}
	defer func() {
		unix.Unlinkat(pfd, privateSocket, 0) // if it was never moved
		removePrivateDir(dfd, pname, pfd)
		unix.Close(pfd)
	}()

	// /proc/self/fd/N names the private directory by its descriptor, so
	// the bind lands there even if the name was moved away.
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("/proc/self/fd/%d/%s", pfd, privateSocket), Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("binding the socket (one-socket needs /proc mounted): %w", err)
	}
	ln.SetUnlinkOnClose(false) // removal is socketFile.remove's job
	defer func() {
		if err != nil {
			ln.Close()
			ln = nil
		}
	}()
	// The group before the mode: a chown does not clear a socket's
	// permission bits, and nobody can reach the file before the move.
	if gid != -1 {
		if err := unix.Fchownat(pfd, privateSocket, -1, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, nil, fmt.Errorf("setting the socket's group: %w", os.NewSyscallError("fchownat", err))
		}
	}
	if err := unix.Fchmodat(pfd, privateSocket, uint32(mode.Perm()), 0); err != nil {
		return nil, nil, fmt.Errorf("setting the socket's mode: %w", os.NewSyscallError("fchmodat", err))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, privateSocket, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, nil, os.NewSyscallError("fstatat", err)
	}
	if err := moveNoReplace(pfd, privateSocket, dfd, base); errors.Is(err, unix.EEXIST) {
		return nil, nil, fmt.Errorf("another process created %s while one-socket was starting", path)
	} else if err != nil {
		return nil, nil, fmt.Errorf("moving the socket into place at %s: %w", path, err)
	}
	return ln, &socketFile{path: path, dev: st.Dev, ino: st.Ino}, nil
}

// privateDir makes a new directory, 0700, in the directory dfd and
// returns its name and a descriptor for it, checked to be the directory
// this process made: the name could be replaced before the open.
func privateDir(dfd int) (string, int, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", -1, err
	}
	name := fmt.Sprintf(".one-socket.%d.%x", os.Getpid(), rnd)
	if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
		return "", -1, os.NewSyscallError("mkdirat", err)
	}
	pfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, os.NewSyscallError("openat", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		unix.Close(pfd)
		return "", -1, os.NewSyscallError("fstat", err)
	}
	if st.Uid != uint32(os.Geteuid()) || st.Mode&0o077 != 0 {
		unix.Close(pfd)
		return "", -1, fmt.Errorf("%s was replaced by another user's directory", name)
	}
	return name, pfd, nil
}

// removePrivateDir removes privateDir's directory if name still is it.
func removePrivateDir(dfd int, name string, pfd int) {
	var mine, there unix.Stat_t
	if unix.Fstat(pfd, &mine) != nil || unix.Fstatat(dfd, name, &there, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	if mine.Dev == there.Dev && mine.Ino == there.Ino {
		unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
	}
}

// moveNoReplace moves oldName in oldDir to newName in newDir, failing
// with EEXIST if newName exists. Where the file system has no
// RENAME_NOREPLACE, a hard link and an unlink do the same.
func moveNoReplace(oldDir int, oldName string, newDir int, newName string) error {
	err := unix.Renameat2(oldDir, oldName, newDir, newName, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	if err := unix.Linkat(oldDir, oldName, newDir, newName, 0); err != nil {
		return err
	}
	return unix.Unlinkat(oldDir, oldName, 0)
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
