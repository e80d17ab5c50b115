package handover

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// The two documents in testdata were written by v0.1.0's daemon for these
// values; they pin the format: a renamed field breaks this test, not an
// upgrade.
var (
	goldenStarted = time.Date(2026, 11, 30, 8, 15, 0, 123456789, time.UTC)
	goldenConns   = []Conn{
		{FD: 7, Waiting: true, Key: []byte("vhost-user/blk0"), Mode: spb.ModeServer, UID: 1000, Since: 1500 * time.Millisecond, Consumed: 1044},
		{FD: 8, Since: 20 * time.Millisecond, Partial: []byte{1, 0, 0, 0, 'k'}},
	}
	goldenUpgrade = State{
		Version: 1,
		Process: &Process{
			Exe: "/usr/sbin/one-socket", Listener: 3, Control: 4, PidFile: 5, PidPath: "/run/one-socket.pid",
			Socket:    Socket{Path: "/run/one.socket", Created: true, Dev: 25, Ino: 4242},
			CtlSocket: Socket{Path: "/run/one.socket.ctl", Created: true, Dev: 25, Ino: 4243},
			Started:   goldenStarted, LogLevel: "INFO", LogFile: "/var/log/one-socket.log",
		},
		Conns: goldenConns,
	}
	goldenStore = State{
		Version: 1,
		Saved:   goldenStarted.Add(time.Hour),
		Conns: []Conn{
			withIno(goldenConns[0], 900),
			withIno(goldenConns[1], 901),
		},
		Counts: &Counts{Clients: 2, Listeners: 1},
	}
)

func withIno(c Conn, ino uint64) Conn {
	c.Ino = ino
	return c
}

func TestGolden(t *testing.T) {
	for file, want := range map[string]*State{"upgrade-v1.json": &goldenUpgrade, "store-v1.json": &goldenStore} {
		t.Run(file, func(t *testing.T) {
			golden, err := os.ReadFile(filepath.Join("testdata", file))
			require.NoError(t, err)
			got, err := Decode(bytes.NewReader(golden))
			require.NoError(t, err, "v0.1.0's document no longer decodes")
			assert.Equal(t, want, got, "v0.1.0's document decodes to something else")
			// Written now, it is what v0.1.0 wrote, so that v0.1.0 could
			// read it back.
			data, err := json.Marshal(want)
			require.NoError(t, err)
			assert.JSONEq(t, string(golden), string(data))
		})
	}
}

// TestEngineRoundTrip checks that every field of the engine's HandedConn
// survives the way through a Conn: a field added to the engine and not
// here fails it.
func TestEngineRoundTrip(t *testing.T) {
	h := broker.HandedConn{FD: 9, Waiting: true, Key: []byte("k"), Mode: spb.ModeClient, UID: 7,
		Since: time.Second, Partial: []byte{1}, Consumed: 12, Stored: 5, Reread: true}
	assert.Equal(t, h, FromEngine(h).Engine(9))
	// A new engine field must be carried through Conn too.
	var names []string
	for f := range reflect.TypeOf(h).Fields() {
		names = append(names, f.Name)
	}
	assert.Equal(t, []string{"FD", "Waiting", "Key", "Mode", "UID", "Since", "Partial", "Consumed", "Stored", "Reread"}, names,
		"broker.HandedConn changed: carry the change through Conn, FromEngine and Engine, and the Version if it changes the document")
}

func TestDecodeRefuses(t *testing.T) {
	for doc, want := range map[string]string{
		`{"version":2,"conns":[]}`:                "version 2, this daemon reads 1",
		`{"version":1,"conns":[],"surprise":1}`:   `unknown field "surprise"`,
		`{"version":1,"conns":[{"fd2":1}]}`:       `unknown field "fd2"`,
		`{"version":1,"conns":[]} {"version":1}`:  "more than one document",
		`{"version":1,"conns":[`:                  "malformed",
		`{"version":1,"conns":[],"listener":"3"}`: "malformed",
	} {
		_, err := Decode(strings.NewReader(doc))
		assert.ErrorContains(t, err, want, doc)
	}
}

// TestStoreRoundTrip stores real sockets' descriptions in a sealed memfd,
// reads it back, and matches descriptors passed back in another order,
// one hung up and one unknown.
func TestStoreRoundTrip(t *testing.T) {
	var ends [3][2]int
	for i := range ends {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		ends[i] = [2]int{p[0], p[1]}
		defer unix.Close(p[1])
	}
	conns := []broker.HandedConn{
		{FD: ends[0][0], Waiting: true, Key: []byte("a"), Since: time.Second},
		{FD: ends[1][0], Partial: []byte{1, 2}},
	}
	saved := time.Now()
	s, fds := ForStore(conns, saved)
	require.Equal(t, []int{ends[0][0], ends[1][0]}, fds)
	assert.Equal(t, 2, s.Counts.Clients)
	mfd, err := s.Memfd("test", true)
	require.NoError(t, err)
	_, err = unix.Write(mfd, []byte("x"))
	assert.ErrorIs(t, err, unix.EPERM, "the stored description is sealed")
	f := os.NewFile(uintptr(mfd), "state")
	defer f.Close()
	back, err := ReadStored(f)
	require.NoError(t, err)

	// The store passes back the second client, an unknown socket, and not
	// the first (it hung up).
	unix.Close(ends[0][0])
	r := back.Match([]int{ends[2][0], ends[1][0]}, saved.Add(time.Minute))
	require.Len(t, r.Conns, 1)
	assert.Equal(t, ends[1][0], r.Conns[0].FD)
	assert.Equal(t, []byte{1, 2}, r.Conns[0].Partial)
	assert.Equal(t, time.Minute, r.Conns[0].Since, "the wait goes on while no daemon runs")
	assert.Equal(t, 1, r.Lost)
	assert.Equal(t, 1, r.Stray)
	_, err = unix.FcntlInt(uintptr(ends[2][0]), unix.F_GETFD, 0)
	assert.ErrorIs(t, err, unix.EBADF, "an unknown descriptor is closed")
	unix.Close(ends[1][0])

	_, err = ReadStored(fileOf(t, &goldenUpgrade))
	assert.ErrorContains(t, err, "an upgrade's description")
}

func fileOf(t *testing.T, s *State) *os.File {
	mfd, err := s.Memfd("test", false)
	require.NoError(t, err)
	f := os.NewFile(uintptr(mfd), "state")
	t.Cleanup(func() { f.Close() })
	return f
}

// TestTake runs Take as the program after exec would: the variable names
// a memfd, whose descriptors must be open.
func TestTake(t *testing.T) {
	t.Setenv(EnvVar, "")
	os.Unsetenv(EnvVar)
	s, err := Take()
	require.NoError(t, err)
	assert.Nil(t, s, "no variable, no hand-over")

	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(ln)
	st := State{Version: Version, Process: &Process{Listener: ln, Control: -1, PidFile: -1}}
	f := fileOf(t, &st)
	t.Setenv(EnvVar, strconv.Itoa(int(f.Fd())))
	got, err := Take()
	require.NoError(t, err)
	assert.Equal(t, ln, got.Listener)
	_, set := os.LookupEnv(EnvVar)
	assert.False(t, set, "the variable is unset")

	st.Conns = []Conn{{FD: 1 << 20}}
	f = fileOf(t, &st)
	t.Setenv(EnvVar, strconv.Itoa(int(f.Fd())))
	_, err = Take()
	assert.ErrorContains(t, err, "descriptor 1048576")

	t.Setenv(EnvVar, "2")
	_, err = Take()
	assert.ErrorContains(t, err, "not a descriptor")
}

// TestCheckProgram runs real programs as the new binary.
func TestCheckProgram(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
		return p
	}
	assert.NoError(t, CheckProgram(script("good", `[ "$1" = --handover-version ] && echo 1`), time.Minute))
	assert.ErrorContains(t, CheckProgram(script("other", "echo 2"), time.Minute), `speaks handover version "2"`)
	assert.ErrorContains(t, CheckProgram(script("fails", "exit 3"), time.Minute), "exit status 3")
	assert.ErrorContains(t, CheckProgram(script("hangs", "exec sleep 60"), 100*time.Millisecond), "no answer within")
	assert.ErrorContains(t, CheckProgram("", time.Minute), "binary path is unknown")
	assert.ErrorContains(t, CheckProgram(filepath.Join(dir, "missing"), time.Minute), "no such file")
	// Killed by the upgrade's own SIGUSR2 (systemctl kill signals every
	// process of the unit) the first two times: asked again.
	flaky := script("flaky", `n=$(cat "$0.n" 2>/dev/null || echo 0); echo $((n+1)) >"$0.n"; [ "$n" -lt 2 ] && kill -USR2 $$; echo 1`)
	assert.NoError(t, CheckProgram(flaky, time.Minute))
	assert.ErrorContains(t, CheckProgram(script("killed", "kill -USR2 $$"), time.Minute), "user defined signal 2")
	assert.ErrorContains(t, CheckProgram(script("killed9", "kill -KILL $$"), time.Minute), "killed")
}

// TestTotals checks that an engine's counters survive the document, by
// name, protocol errors included.
func TestTotals(t *testing.T) {
	s := broker.Stats{Accepted: 9, Paired: 4, Refused: 3, Shed: 2, TimedOut: 1, Vanished: 5, Denied: 6, OverQuota: 7, Expired: 8}
	s.ProtocolErrors[broker.ErrKindSize] = 11
	st := State{Version: Version, Totals: TotalsOf(s)}
	data, err := json.Marshal(&st)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"size":11`)
	back, err := Decode(bytes.NewReader(data))
	require.NoError(t, err)
	assert.Equal(t, s, back.Totals.Stats())
	assert.Equal(t, broker.Stats{}, (*Totals)(nil).Stats(), "what v0.1.0 wrote has none")
}

// TestCheckConfig runs real programs as the new binary's configuration
// check: one that accepts, one that refuses, and one too old to know it.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
		return p
	}
	legacy, err := CheckConfig(script("ok", `[ "$1" = --handover-check ] && [ "$2" = --socket ]`), []string{"--socket", "/s"}, time.Minute)
	assert.NoError(t, err)
	assert.False(t, legacy)
	_, err = CheckConfig(script("refuses", `echo "one-socket: policy: bad" >&2; exit 1`), nil, time.Minute)
	assert.EqualError(t, err, "the new program would not start: one-socket: policy: bad")
	legacy, err = CheckConfig(script("old", `echo "flag provided but not defined: -handover-check" >&2; exit 2`), nil, time.Minute)
	assert.NoError(t, err)
	assert.True(t, legacy)
	_, err = CheckConfig(filepath.Join(dir, "missing"), nil, time.Minute)
	assert.ErrorContains(t, err, "no such file")
}
