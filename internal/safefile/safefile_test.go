package safefile

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/testutil"
)

// other is a uid and gid that no file of the test's is owned by.
const other = 1001

func write(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte("x\n"), mode))
	require.NoError(t, os.Chmod(path, mode))
	return path
}

// never fails t if fn has not returned within a minute: an open must not
// block on a FIFO.
func never(t *testing.T, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("the open blocked")
		return nil
	}
}

func TestOpenOwn(t *testing.T) {
	dir := t.TempDir()
	victim := write(t, filepath.Join(dir, "victim"), 0o600)

	f, err := OpenOwn(filepath.Join(dir, "new.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	require.NoError(t, err, "a new file is created")
	fi, err := f.Stat()
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	f.Close()
	f, err = OpenOwn(filepath.Join(dir, "new.log"), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err, "the daemon's own file opens again")
	f.Close()

	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(victim, link))
	_, err = OpenOwn(link, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	assert.ErrorIs(t, err, ErrUnsafe)
	assert.ErrorContains(t, err, "a symbolic link")

	hard := filepath.Join(dir, "hard")
	require.NoError(t, os.Link(victim, hard))
	_, err = OpenOwn(hard, os.O_WRONLY|os.O_APPEND, 0)
	assert.ErrorContains(t, err, "it has 2 hard links")

	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	err = never(t, func() error { _, err := OpenOwn(fifo, os.O_WRONLY|os.O_APPEND, 0); return err })
	assert.Error(t, err, "a FIFO without a reader")
	_, err = OpenOwn(fifo, os.O_RDWR, 0)
	assert.ErrorContains(t, err, "a named pipe, not a regular file")

	_, err = OpenOwn(dir, os.O_RDONLY, 0)
	assert.ErrorContains(t, err, "a directory, not a regular file")

	t.Run("another uid's file", func(t *testing.T) {
		testutil.NeedRoot(t)
		theirs := write(t, filepath.Join(dir, "theirs"), 0o666)
		require.NoError(t, os.Chown(theirs, other, other))
		_, err := OpenOwn(theirs, os.O_RDWR|os.O_CREATE, 0o644)
		assert.ErrorContains(t, err, "owned by uid 1001, not by the daemon's uid 0")
	})
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, "x\n", string(b), "nothing was written to the victim")
}

func TestOpenTrusted(t *testing.T) {
	dir := t.TempDir()
	good := write(t, filepath.Join(dir, "policy"), 0o644)
	f, err := OpenTrusted(good)
	require.NoError(t, err)
	f.Close()
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(good, link))
	f, err = OpenTrusted(link)
	require.NoError(t, err, "a link to a trusted file is fine, as a ConfigMap mount has")
	f.Close()

	for mode, ok := range map[os.FileMode]bool{0o600: true, 0o640: true, 0o664: false, 0o646: false} {
		p := write(t, filepath.Join(dir, "m"+mode.String()), mode)
		_, err := OpenTrusted(p)
		if ok {
			assert.NoError(t, err, mode.String())
		} else {
			assert.ErrorContains(t, err, "writable by its group or by everyone", mode.String())
		}
	}

	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	err = never(t, func() error { _, err := OpenTrusted(fifo); return err })
	assert.ErrorContains(t, err, "a named pipe, not a regular file")

	open := filepath.Join(dir, "open")
	require.NoError(t, os.Mkdir(open, 0o777))
	require.NoError(t, os.Chmod(open, 0o777))
	_, err = OpenTrusted(write(t, filepath.Join(open, "policy"), 0o644))
	assert.ErrorContains(t, err, "directory "+open+": unsafe file: writable by its group or by everyone")
	require.NoError(t, os.Chmod(open, os.ModeSticky|0o777))
	_, err = OpenTrusted(filepath.Join(open, "policy"))
	assert.NoError(t, err, "a sticky directory is fine: only the owner may replace its entries")

	t.Run("another uid's", func(t *testing.T) {
		testutil.NeedRoot(t)
		theirs := write(t, filepath.Join(dir, "theirs"), 0o644)
		require.NoError(t, os.Chown(theirs, other, other))
		_, err := OpenTrusted(theirs)
		assert.ErrorContains(t, err, "owned by uid 1001; only root or the daemon's uid may own it")
		toTheirs := filepath.Join(dir, "to-theirs")
		require.NoError(t, os.Symlink(theirs, toTheirs))
		_, err = OpenTrusted(toTheirs)
		assert.ErrorContains(t, err, "owned by uid 1001", "a link to another uid's file")

		theirDir := filepath.Join(dir, "their-dir")
		require.NoError(t, os.Mkdir(theirDir, 0o755))
		require.NoError(t, os.Chown(theirDir, other, other))
		_, err = OpenTrusted(write(t, filepath.Join(theirDir, "policy"), 0o644))
		assert.ErrorContains(t, err, "directory "+theirDir+": unsafe file: owned by uid 1001")
	})
}
