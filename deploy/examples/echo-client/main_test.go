package main

// The tests run the client as a process against the real daemon, paired
// with the echo server the Kubernetes example runs: one-socketctl pair in
// server mode, with a shell loop answering each line on descriptor 3.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
)

// key is the example's key (PAIR_KEY in deploy/kubernetes/example.yaml).
const key = "example-echo"

// serverScript is what the echo-server pod runs for each client.
const serverScript = `while read -r line <&3; do
	echo "echo-server: got: $line"
	echo "you said: $line" >&3
done`

// binDir holds the programs TestMain builds.
var binDir string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	var err error
	binDir, err = os.MkdirTemp("", "echo-client-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	for _, b := range []struct {
		out  string
		pkgs []string
	}{
		{binDir + "/", []string{"github.com/one-socket/one-socket/cmd/one-socket", "github.com/one-socket/one-socket/cmd/one-socketctl"}},
		{filepath.Join(binDir, "one-socket-echo-client"), []string{"."}},
	} {
		if err := testutil.Build(b.out, nil, b.pkgs...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// start runs one of the built programs, in a process group of its own,
// with the environment variables given and none of the test's that would
// change where it looks; the test's end kills what is left of it.
func start(t *testing.T, env []string, name string, args ...string) *testutil.Proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ONE_SOCKET_") && !strings.HasPrefix(kv, "PAIR_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return testutil.StartProc(t, name, cmd)
}

// broker is a running daemon.
type broker struct {
	socket, ctl string
	proc        *testutil.Proc
}

// startBroker runs the daemon on sockets in a fresh directory, short
// enough for sun_path, until the test ends.
func startBroker(t *testing.T) *broker {
	t.Helper()
	dir, err := os.MkdirTemp("", "echo")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &broker{socket: filepath.Join(dir, "one.socket"), ctl: filepath.Join(dir, "one-socket.ctl")}
	b.proc = start(t, nil, "one-socket", "--socket="+b.socket, "--ctl-socket="+b.ctl)
	b.proc.WaitFor(t, "the broker to start", func() bool {
		return strings.Contains(b.proc.Log.String(), `msg="one-socket started"`)
	})
	return b
}

// waiting returns the number of clients waiting in the broker.
func (b *broker) waiting(t *testing.T) int {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "one-socketctl"), "--ctl-socket="+b.ctl, "--json", "status").Output()
	require.NoError(t, err)
	var st struct{ Waiting int }
	require.NoError(t, json.Unmarshal(out, &st), "%s", out)
	return st.Waiting
}

// startServer runs one round of the example's echo server.
func (b *broker) startServer(t *testing.T) *testutil.Proc {
	return start(t, []string{"ONE_SOCKET_PATH=" + b.socket}, "one-socketctl",
		"pair", "--mode", "server", key, "--", "sh", "-c", serverScript)
}

// startClient runs the client under test, as the example pod does: the
// socket and the key from the environment, the interval as a flag.
func (b *broker) startClient(t *testing.T, interval string) *testutil.Proc {
	return start(t, []string{"ONE_SOCKET_PATH=" + b.socket, "PAIR_KEY=" + key}, "one-socket-echo-client", "--interval="+interval)
}

// replies returns the numbers of the lines the client logs as answered,
// checking that each answer is the server's echo of its line.
func replies(t *testing.T, log string) []string {
	t.Helper()
	var ns []string
	for _, m := range regexp.MustCompile(`(?m)^sent "hello (\d+)", got "(.*)"$`).FindAllStringSubmatch(log, -1) {
		assert.Equal(t, "you said: hello "+m[1], m[2])
		ns = append(ns, m[1])
	}
	return ns
}

// stop sends SIGTERM to the client and checks that it ends cleanly.
func stop(t *testing.T, client *testutil.Proc) {
	t.Helper()
	require.NoError(t, client.Cmd.Process.Signal(syscall.SIGTERM))
	<-client.Done()
	assert.NoError(t, client.Err, "the client's exit after SIGTERM")
	assert.True(t, strings.HasSuffix(client.Log.String(), "stopping: terminated signal received\n"), "%s", client.Log.String())
}

// TestEchoClient pairs the client with the echo server, takes the server
// away and brings another, and stops the client.
func TestEchoClient(t *testing.T) {
	b := startBroker(t)
	server := b.startServer(t)
	client := b.startClient(t, "10ms")

	// Several lines on one pair, each answered.
	client.WaitFor(t, "three answers", func() bool { return len(replies(t, client.Log.String())) >= 3 })
	server.WaitFor(t, "the server's log of the first line", func() bool {
		return strings.Contains(server.Log.String(), "echo-server: got: hello 1\n")
	})
	assert.Equal(t, []string{"1", "2", "3"}, replies(t, client.Log.String())[:3])
	assert.Equal(t, 1, strings.Count(client.Log.String(), "paired with a server for \"example-echo\"\n"))

	// The server goes away: the client says why and asks again.
	server.Kill()
	var before int
	client.WaitFor(t, "the client to notice", func() bool {
		log := client.Log.String()
		before = len(replies(t, log))
		return strings.Contains(log, "; asking for a new pair in 1s\n")
	})
	assert.Regexp(t, `\n(the server hung up|sending "hello \d+": .*broken pipe|reading the reply to "hello \d+": .*connection reset by peer); asking for a new pair in 1s\n`,
		client.Log.String())
	// It waits in the broker for the next server, which it gets.
	client.WaitFor(t, "the client to wait for a server", func() bool { return b.waiting(t) == 1 })
	second := b.startServer(t)
	client.WaitFor(t, "answers from the second server", func() bool {
		return len(replies(t, client.Log.String())) >= before+2
	})
	assert.Equal(t, 2, strings.Count(client.Log.String(), "paired with a server for \"example-echo\"\n"))
	assert.Contains(t, second.Log.String(), "echo-server: got: hello ")
	// The numbers go on over the pairs (a line lost with the first
	// server leaves a gap).
	ns := replies(t, client.Log.String())
	for i := 1; i < len(ns); i++ {
		a, _ := strconv.Atoi(ns[i-1])
		b, _ := strconv.Atoi(ns[i])
		assert.Less(t, a, b, "lines answered: %v", ns)
	}

	stop(t, client)
}

// TestEchoClientStops sends SIGTERM while the client waits for a server
// and while it pauses after a failure.
func TestEchoClientStops(t *testing.T) {
	t.Run("waiting for a server", func(t *testing.T) {
		b := startBroker(t)
		client := b.startClient(t, "1s")
		client.WaitFor(t, "the client to wait", func() bool { return b.waiting(t) == 1 })
		stop(t, client)
		// The broker forgets it.
		b.proc.WaitFor(t, "the broker to forget the client", func() bool { return b.waiting(t) == 0 })
	})
	t.Run("pausing after a failure", func(t *testing.T) {
		dir := t.TempDir()
		client := start(t, []string{"ONE_SOCKET_PATH=" + filepath.Join(dir, "none.socket"), "PAIR_KEY=" + key},
			"one-socket-echo-client")
		client.WaitFor(t, "the client to fail", func() bool {
			return strings.Contains(client.Log.String(), "connect: no such file or directory; asking for a new pair in 1s\n")
		})
		stop(t, client)
	})
}

// TestEchoClientUsage checks that the client refuses to start without a
// key or with a bad interval.
func TestEchoClientUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-key="}, {"-key=k", "-interval=0s"}, {"-key=k", "extra"}} {
		c := start(t, []string{"ONE_SOCKET_PATH=/nonexistent"}, "one-socket-echo-client", args...)
		<-c.Done()
		var ee *exec.ExitError
		require.ErrorAs(t, c.Err, &ee, "%q", args)
		assert.Equal(t, 2, ee.ExitCode(), "%q: %s", args, c.Log.String())
	}
}
