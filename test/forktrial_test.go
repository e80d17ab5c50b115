package ctest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// Fork trials: each scenario runs forkTrials fresh processes of
// test/forktrial.c linked with the installed Go archive, and
// forkTrialsC with the installed runtime-free one; in each, a child made
// by fork(), daemon(3) or a raw SYS_fork pairs through the broker with its
// parent (or, after daemon(3), with this test). Without the library's fork
// detection a large share of such processes hang for good with the Go
// archive (shared/design/c-library.md measured up to 200 of 200); here a
// single hang fails the test. The runtime-free archive has no runtime to
// hang, so fewer trials show that a host forking around it works too.
const (
	forkTrials      = 200
	forkTrialsC     = 40
	forkWorkers     = 4                // processes in flight at once
	forkTrialLimit  = 10 * time.Second // a trial slower than this hung
	forkMaxHangs    = 3                // stop a scenario after this many
	forkShownErrors = 3                // outputs of failed trials shown
)

type forkScenario struct {
	name string
	args []string
	// harnessPeer: the parent is gone (daemon(3)), so this test pairs
	// with the child through the Go client package.
	harnessPeer bool
}

var forkScenarios = []forkScenario{
	{"fork-before", []string{"--fork=fork", "--when=before"}, false},
	{"fork-after", []string{"--fork=fork", "--when=after"}, false},
	{"daemon-before", []string{"--fork=daemon", "--when=before"}, true},
	{"daemon-after", []string{"--fork=daemon", "--when=after"}, true},
	{"sysfork-before", []string{"--fork=sysfork", "--when=before"}, false},
	{"sysfork-after", []string{"--fork=sysfork", "--when=after"}, false},
	// The parent has 4 threads calling into Go while it forks.
	{"parent-busy", []string{"--fork=fork", "--when=after", "--busy"}, false},
}

func TestForkTrials(t *testing.T) {
	t.Parallel()
	runner := runnerBin(t)
	b := startBroker(t, filepath.Join(tempDir(t), "one.sock"))
	start := time.Now()
	total := 0
	for _, c := range []struct {
		l      lib
		trials int
	}{
		{goArchive(t), forkTrials},
		{cArchive(t, false), forkTrialsC},
	} {
		prog := program(t, c.l, "forktrial")
		for _, sc := range forkScenarios {
			// The name is in the pairing keys too: each library's own.
			sc.name = c.l.name + "/" + sc.name
			t.Run(sc.name, func(t *testing.T) {
				s := runForkTrials(runner, prog, b.path, sc, c.trials)
				total += s.ran
				t.Logf("%s: %d trials, %d hung, %d failed, in %v", sc.name, s.ran, s.hung, s.failed, s.elapsed.Round(time.Millisecond))
				for _, e := range s.errors {
					t.Log(e)
				}
				if s.hung > 0 {
					t.Errorf("%s: %d of %d trials hung (limit %v each)", sc.name, s.hung, s.ran, forkTrialLimit)
				}
				if s.failed > 0 {
					t.Errorf("%s: %d of %d trials failed", sc.name, s.failed, s.ran)
				}
				require.Equal(t, c.trials, s.ran, "trials run")
			})
		}
	}
	t.Logf("fork trials: %d processes in %v", total, time.Since(start).Round(time.Millisecond))
}

type forkStats struct {
	ran, hung, failed int
	errors            []string
	elapsed           time.Duration
}

// runForkTrials runs trials processes of one scenario, forkWorkers at a
// time, stopping early once forkMaxHangs have hung.
func runForkTrials(runner, prog, broker string, sc forkScenario, trials int) forkStats {
	var (
		mu   sync.Mutex
		s    forkStats
		next atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range forkWorkers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				mu.Lock()
				stop := i >= trials || s.hung >= forkMaxHangs
				mu.Unlock()
				if stop {
					return
				}
				hung, failure := forkTrial(runner, prog, broker, sc, i)
				mu.Lock()
				s.ran++
				switch {
				case hung:
					s.hung++
				case failure != "":
					s.failed++
				}
				if failure != "" && len(s.errors) < forkShownErrors {
					s.errors = append(s.errors, fmt.Sprintf("trial %d: %s", i, failure))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	return s
}

// forkTrial runs one process of the scenario; it returns whether it hung,
// and what went wrong if anything did.
func forkTrial(runner, prog, broker string, sc forkScenario, i int) (hung bool, failure string) {
	key := fmt.Sprintf("forktrial-%s-%d-%d", sc.name, os.Getpid(), i)
	peerErr := make(chan error, 1)
	if sc.harnessPeer {
		go func() { peerErr <- pairWithChild(broker, key) }()
	} else {
		peerErr <- nil
	}
	argv := append([]string{prog, "--broker=" + broker, "--key=" + key, reportArg}, sc.args...)
	res, err := runWith(runner, forkTrialLimit, nil, argv...)
	if err != nil {
		return false, err.Error()
	}
	if res.timedOut() {
		return true, res.String()
	}
	if !res.ok() {
		return false, res.String()
	}
	if err := <-peerErr; err != nil {
		return false, "the test's side of the pairing: " + err.Error()
	}
	return false, ""
}

// pairWithChild is the server side of a daemonized child's pairing: it
// says 'p' and must hear 'c'.
func pairWithChild(broker, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), forkTrialLimit)
	defer cancel()
	f, err := spb.GetPair(ctx, broker, []byte(key), spb.ModeServer)
	if err != nil {
		return err
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(forkTrialLimit)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("p")); err != nil {
		return err
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if buf[0] != 'c' {
		return fmt.Errorf("heard %q from the child, want 'c'", buf)
	}
	return nil
}
