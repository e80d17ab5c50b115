package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// rawClientSource is a C client that speaks the protocol with plain system
// calls, standing in for clients built against the original C library.
const rawClientSource = "../../test/interop/rawclient.c"

// buildRawClient compiles rawclient.c with the system's C compiler. A
// missing compiler fails the test: interoperability must not go untested
// silently.
func buildRawClient(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatalf("no C compiler: the interoperability tests need `cc` in PATH (on Debian: apt-get install gcc): %v", err)
	}
	bin := filepath.Join(t.TempDir(), "rawclient")
	out, err := exec.Command(cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
		"-o", bin, rawClientSource).CombinedOutput()
	require.NoError(t, err, "compiling %s:\n%s", rawClientSource, out)
	return bin
}

// rawClient runs the C client and returns what it printed.
type rawResult struct {
	stdout string
	err    error
}

func startRawClient(ctx context.Context, bin, path, key, mode, line string) <-chan rawResult {
	done := make(chan rawResult, 1)
	go func() {
		cmd := exec.CommandContext(ctx, bin, path, key, mode, line)
		var stderr testutil.LockedBuffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = fmt.Errorf("rawclient %s %s: %w: %s", mode, key, err, stderr.String())
		}
		done <- rawResult{string(out), err}
	}()
	return done
}

// TestInteropRawClients pairs two C clients, one of each mode and two in
// mode none, on a socket file and on an abstract socket.
func TestInteropRawClients(t *testing.T) {
	bin := buildRawClient(t)
	for _, tt := range []struct {
		name, path string
		modes      [2]string
	}{
		{"file client-server", sockPath(t), [2]string{"server", "client"}},
		{"abstract none-none", fmt.Sprintf("@one-socket-interop-%d", os.Getpid()), [2]string{"none", "none"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, tt.path, "--open-abstract")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			key := string(uniqueKey("interop"))
			a := startRawClient(ctx, bin, tt.path, key, tt.modes[0], "hello from A")
			b := startRawClient(ctx, bin, tt.path, key, tt.modes[1], "hello from B")
			ra, rb := <-a, <-b
			require.NoError(t, ra.err)
			require.NoError(t, rb.err)
			assert.Equal(t, "got: hello from B\n", ra.stdout)
			assert.Equal(t, "got: hello from A\n", rb.stdout)
			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			assert.EqualValues(t, 1, logCounter(t, d.stderr.String(), "paired"))
		})
	}
}

// TestInteropRawAndGoClient pairs a C client with a libspbroker client.
func TestInteropRawAndGoClient(t *testing.T) {
	bin := buildRawClient(t)
	path := sockPath(t)
	d := startDaemon(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := uniqueKey("interop-go")

	c := startRawClient(ctx, bin, path, string(key), "server", "hello from C")
	f, err := getPair(ctx, path, key, spb.ModeClient)
	require.NoError(t, err)
	defer f.Close()
	conn := asConn(t, f)
	_, err = conn.Write([]byte("hello from Go\n"))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "hello from C\n", line)

	r := <-c
	require.NoError(t, r.err)
	assert.Equal(t, "got: hello from Go\n", r.stdout)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
}
