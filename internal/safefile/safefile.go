// Package safefile opens the files a root daemon reads and writes at
// paths that other users may be able to influence: its log, its pid file
// and its policy. Each open refuses, instead of following or blocking on,
// what a hostile local user could put at the path: a symbolic link to a
// file of root's, a hard link, a FIFO that never opens, a file of their
// own.
package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// ErrUnsafe is wrapped by every refusal for what the file is, as opposed
// to a failure to open it.
var ErrUnsafe = errors.New("unsafe file")

// OpenOwn opens path for the daemon to write (flag is O_WRONLY or O_RDWR,
// with O_APPEND, O_CREATE as needed), creating it with perm. It refuses a
// symbolic link at path, anything but a regular file, a file owned by
// another uid than the process's, and one with other hard links: the file
// is the daemon's alone.
func OpenOwn(path string, flag int, perm fs.FileMode) (*os.File, error) {
	// O_NONBLOCK: a FIFO must not hold the open (it fails with ENXIO
	// without a reader, and is refused below with one).
	f, st, err := openStat(path, flag|unix.O_NOFOLLOW, perm)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s: %w: a symbolic link; the daemon writes only a file of its own", path, ErrUnsafe)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("%s: %w: %s, not a regular file", path, ErrUnsafe, kind(st.Mode))
	case st.Uid != uint32(os.Geteuid()):
		err = fmt.Errorf("%s: %w: owned by uid %d, not by the daemon's uid %d", path, ErrUnsafe, st.Uid, os.Geteuid())
	case st.Nlink > 1:
		err = fmt.Errorf("%s: %w: it has %d hard links", path, ErrUnsafe, st.Nlink)
	}
	if err == nil {
		err = clearNonblock(int(f.Fd()))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenTrusted opens path to read a file that decides what others may do,
// as sshd's StrictModes checks one: the file (symbolic links followed)
// must be regular, owned by root or by the process's uid, and writable by
// nobody else; so must every directory on the way to it, but for a
// sticky one, such as /tmp, whose entries only their owner may replace.
// The open never blocks, whatever is at path.
func OpenTrusted(path string) (*os.File, error) {
	f, st, err := openStat(path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		err = fmt.Errorf("%s: %w: %s, not a regular file", path, ErrUnsafe, kind(st.Mode))
	} else if err = trusted(path, "", st); err == nil {
		err = trustedDirs(path)
	}
	if err == nil {
		err = clearNonblock(int(f.Fd()))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openStat opens path with flag, O_NONBLOCK (so that no FIFO or device
// can hold the open) and O_CLOEXEC, and returns it with its status.
func openStat(path string, flag int, perm fs.FileMode) (*os.File, *unix.Stat_t, error) {
	fd, err := unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), &st, nil
}

// trusted checks one file's owner and mode; what is "" for the file
// itself, or the directory's path.
func trusted(path, what string, st *unix.Stat_t) error {
	name := path
	if what != "" {
		name = fmt.Sprintf("%s: directory %s", path, what)
	}
	owners := []uint32{0, uint32(os.Geteuid())}
	if !slices.Contains(owners, st.Uid) {
		return fmt.Errorf("%s: %w: owned by uid %d; only root or the daemon's uid may own it", name, ErrUnsafe, st.Uid)
	}
	writable := st.Mode & 0o022
	if what != "" && st.Mode&unix.S_ISVTX != 0 {
		writable = 0
	}
	if writable != 0 {
		return fmt.Errorf("%s: %w: writable by its group or by everyone (mode %#o)", name, ErrUnsafe, st.Mode&0o7777)
	}
	return nil
}

// trustedDirs checks every directory from the root to the file that path
// resolves to.
func trustedDirs(path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return &fs.PathError{Op: "stat", Path: dir, Err: err}
		}
		if err := trusted(path, dir, &st); err != nil {
			return err
		}
		if dir == "/" {
			return nil
		}
	}
}

func clearNonblock(fd int) error {
	if err := unix.SetNonblock(fd, false); err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	return nil
}

// kind names a file type for a refusal.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return "not a regular file"
}
