package handover

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The tests run this test binary as the other processes of a hand-over:
// the keeper's two stages, the program the keeper gives the clients back
// to, and the next instance a service manager starts with its store.
const (
	helperTakeBack = "handover-test-take-back" // after a keeper: Take, then answer each client
	helperRestart  = "handover-test-restart"   // under a manager: TakePassed and TakeStored
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case KeeperFlag, KeeperArmedFlag:
			os.Exit(RunKeeper(os.Args[1], os.Args[2:]))
		case helperTakeBack:
			os.Exit(takeBack())
		case helperRestart:
			os.Exit(restart())
		}
	}
	os.Exit(m.Run())
}

// answer writes to each client what shows who took it: its key, then why
// it came back.
func answer(fd int, key []byte, why string) error {
	_, err := unix.Write(fd, []byte(string(key)+"|"+why))
	return err
}

// takeBack is the program a keeper executes with the clients: it takes
// the State and answers every client.
func takeBack() int {
	s, err := Take()
	if err != nil {
		fmt.Fprintln(os.Stderr, "take back:", err)
		return 1
	}
	for _, c := range s.Conns {
		if err := answer(c.FD, c.Key, os.Getenv(EnvFailed)); err != nil {
			fmt.Fprintln(os.Stderr, "take back:", err)
			return 1
		}
	}
	return 0
}

// restartReport is what the next instance took back, as restart prints it.
type restartReport struct {
	Broker, Control          bool
	Conns, Lost, Stray, Kept int
	Stored                   []uint64 // the ids of the kept copies among Conns
	Described                bool
	Counts                   Counts
	Totals                   *Totals
	Err                      string
}

// restart is the next instance: it takes what the manager passed, answers
// every client taken back and prints a restartReport.
func restart() int {
	p, err := TakePassed(os.Getpid())
	if err != nil {
		fmt.Fprintln(os.Stderr, "restart:", err)
		return 1
	}
	defer p.Close()
	r, err := p.TakeStored(time.Now())
	rep := restartReport{Broker: p.Broker != nil, Control: p.Control != nil}
	if err != nil {
		rep.Err = err.Error()
	}
	if r != nil {
		rep.Conns, rep.Lost, rep.Stray, rep.Kept = len(r.Conns), r.Lost, r.Stray, r.Kept
		rep.Described, rep.Counts, rep.Totals = r.Described, r.Counts, r.Totals
		for _, c := range r.Conns {
			if c.Stored != 0 {
				rep.Stored = append(rep.Stored, c.Stored)
			}
			if err := answer(c.FD, c.Key, "restart"); err != nil {
				fmt.Fprintln(os.Stderr, "restart:", err)
				return 1
			}
			unix.Close(c.FD)
		}
		slices.Sort(rep.Stored)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 1
	}
	return 0
}

// socketpair returns a connected pair, both ends close-on-exec.
func socketpair(t *testing.T) (int, int) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	return p[0], p[1]
}

// readAnswer reads what the process that took the client on the other
// end of peer wrote to it, up to end of file, for at most 20 s.
func readAnswer(t *testing.T, peer int) string {
	t.Helper()
	require.NoError(t, unix.SetNonblock(peer, true)) // for the deadline
	f := os.NewFile(uintptr(peer), "peer")
	defer f.Close()
	require.NoError(t, f.SetReadDeadline(time.Now().Add(20*time.Second)))
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			require.ErrorIs(t, err, io.EOF, "after %q", got)
			return string(got)
		}
	}
}
