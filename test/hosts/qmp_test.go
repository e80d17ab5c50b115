package hosts

// QMP, QEMU's JSON monitor, on a brokered socket: QEMU takes a connected
// socket as a client chardev (fd=3, no server=on) as it is.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/libspbroker"
)

// qmpVersion is QEMU's version as QMP reports it.
type qmpVersion struct {
	QEMU struct {
		Major, Minor, Micro int
	} `json:"qemu"`
	Package string `json:"package"`
}

// qmpClient speaks QMP on a connection: JSON objects, each on a line of
// its own from QEMU.
type qmpClient struct {
	t      *testing.T
	conn   net.Conn
	r      *bufio.Reader
	events []string
}

// newQMP negotiates QMP on conn, and returns the client and the version
// that QEMU's greeting announced.
func newQMP(t *testing.T, conn net.Conn) (*qmpClient, qmpVersion) {
	t.Helper()
	q := &qmpClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	hello := q.read()
	require.Contains(t, hello, "QMP", "QEMU's greeting")
	var greeting struct {
		Version qmpVersion `json:"version"`
	}
	require.NoError(t, json.Unmarshal(hello["QMP"], &greeting))
	require.JSONEq(t, "{}", string(q.do("qmp_capabilities")))
	return q, greeting.Version
}

// dialQMP connects to a QMP socket that QEMU listens on, and negotiates.
func dialQMP(t *testing.T, path string) *qmpClient {
	t.Helper()
	conn, err := net.Dial("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	q, _ := newQMP(t, conn)
	return q
}

// read returns the next message that is not an event, remembering the
// events (they may come between a command and its answer).
func (q *qmpClient) read() map[string]json.RawMessage {
	q.t.Helper()
	for {
		m, err := q.next()
		require.NoError(q.t, err, "reading from QMP")
		if _, ok := m["event"]; !ok {
			return m
		}
	}
}

// next reads one message, and notes its name if it is an event.
func (q *qmpClient) next() (map[string]json.RawMessage, error) {
	q.t.Helper()
	require.NoError(q.t, q.conn.SetReadDeadline(time.Now().Add(hang)))
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	require.NoError(q.t, json.Unmarshal(line, &m), "QMP sent %q", line)
	if ev, ok := m["event"]; ok {
		var name string
		require.NoError(q.t, json.Unmarshal(ev, &name))
		q.events = append(q.events, name)
	}
	return m, nil
}

// drain reads to the end of the connection, where only events may come.
func (q *qmpClient) drain() {
	q.t.Helper()
	for {
		m, err := q.next()
		if err == io.EOF {
			return
		}
		require.NoError(q.t, err, "reading from QMP")
		require.Contains(q.t, m, "event", "QMP sent more than events after quit")
	}
}

// do runs a command and returns its "return" value, failing t on an
// "error" answer.
func (q *qmpClient) do(command string) json.RawMessage {
	q.t.Helper()
	req, _ := json.Marshal(map[string]string{"execute": command})
	// No newline after the object: QEMU parses "quit" at its closing
	// brace and exits with a newline unread, and a Unix socket closed with
	// unread data resets the connection instead of ending it.
	_, err := q.conn.Write(req)
	require.NoError(q.t, err)
	m := q.read()
	ret, ok := m["return"]
	require.True(q.t, ok, "%s: QMP answered %s", command, m["error"])
	return ret
}

// TestQMP drives QEMU's monitor through the broker: qmp_capabilities,
// query-version (compared with qemu-system-x86_64 --version) and quit.
func TestQMP(t *testing.T) {
	qemu := qemuSystem.path(t)
	out, err := exec.Command(qemu, "--version").Output()
	require.NoError(t, err)
	banner, _, _ := strings.Cut(string(out), "\n")

	b := startBroker(t)
	p := b.pair(t, "qmp", "client", nil, qemu, "-machine", "none", "-nodefaults", "-nographic",
		"-chardev", "socket,id=m,fd=3", "-mon", "chardev=m,mode=control")
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	f, err := libspbroker.GetPair(ctx, b.sock, []byte("qmp"), libspbroker.ModeServer)
	require.NoError(t, err)
	conn, err := net.FileConn(f)
	f.Close()
	require.NoError(t, err)
	defer conn.Close()
	q, announced := newQMP(t, conn)

	var v qmpVersion
	require.NoError(t, json.Unmarshal(q.do("query-version"), &v))
	require.Equal(t, announced, v, "query-version and the greeting disagree")
	require.Equal(t, banner, fmt.Sprintf("QEMU emulator version %d.%d.%d (%s)", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, v.Package),
		"query-version and --version disagree")

	require.JSONEq(t, "{}", string(q.do("quit")))
	// QEMU closes the monitor as it exits: the connection ends cleanly.
	q.drain()
	require.Contains(t, q.events, "SHUTDOWN")
	requireExit(t, p, 0)
}
