package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/testutil"
	"github.com/one-socket/one-socket/libspbroker"
)

// survive measures a crash: it parks n waiters, kills the broker with
// SIGKILL, and pairs every waiter with a fresh peer at once, the peers
// asking again (libspbroker's retries) until the next instance serves.
// It reports the time from the kill to the first and to the last pairing.
//
// With bin it plays systemd itself (testutil.Manager, as `manager` does):
// it runs bin args with --fdstore, kills it and starts it again, as
// Restart=on-failure would, with no delay. Otherwise the broker at path
// is killed by running killCmd (for instance "systemctl kill -s KILL
// one-socket" under a real systemd), which must restart it.
func survive(path, ctl, bin, killCmd string, n int, args []string) error {
	var m *testutil.Manager
	var cmd *exec.Cmd
	if bin != "" {
		dir, err := os.MkdirTemp("", "survive")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if m, err = testutil.NewManager(dir, true); err != nil {
			return err
		}
		defer m.Close()
		path, ctl = m.BrokerPath, m.CtlPath
		if cmd, err = startManaged(m, bin, append([]string{"--fdstore"}, args...)); err != nil {
			return err
		}
		defer func() {
			if cmd != nil {
				cmd.Process.Signal(syscall.SIGTERM)
				cmd.Wait()
			}
		}()
	}
	run := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	key := func(i int) []byte { return fmt.Appendf(nil, "s-%s-%d", run, i) }
	fds := make([]int, n)
	for i := range fds {
		fd, err := dial(path)
		if err != nil {
			return fmt.Errorf("waiter %d: %w", i, err)
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, getPair(string(key(i)), libspbroker.ModeServer)); err != nil {
			return fmt.Errorf("waiter %d: %w", i, err)
		}
		fds[i] = fd
	}
	// Let the broker park and keep them all: a waiter not yet kept is
	// lost in the crash like any connection. With a control socket, wait
	// until its status counts them all, and say how long that took.
	parked := time.Now()
	if ctl == "" {
		time.Sleep(time.Second + time.Duration(n)*20*time.Microsecond)
	} else if err := waitKept(ctl, n, 5*time.Minute); err != nil {
		return err
	}
	settle := time.Since(parked)

	t0 := time.Now()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		var err error
		if cmd, err = startManaged(m, bin, append([]string{"--fdstore"}, args...)); err != nil {
			return fmt.Errorf("the start after the kill: %w", err)
		}
	} else if out, err := exec.Command("sh", "-c", killCmd).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", killCmd, err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var first, last atomic.Int64
	var failed atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := pairWaiter(ctx, path, key(i), fds[i]); err != nil {
					if failed.Add(1) <= 5 {
						fmt.Fprintf(os.Stderr, "waiter %d: %v\n", i, err)
					}
					continue
				}
				d := int64(time.Since(t0))
				first.CompareAndSwap(0, d)
				for {
					l := last.Load()
					if d <= l || last.CompareAndSwap(l, d) {
						break
					}
				}
			}
		}()
	}
	for i := range fds {
		next <- i
	}
	close(next)
	wg.Wait()
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	fmt.Printf("waiters=%d kept_after_ms=%.1f paired_after=%d failed=%d kill_to_first_ms=%.1f kill_to_all_ms=%.1f\n",
		n, ms(int64(settle)), int64(n)-failed.Load(), failed.Load(), ms(first.Load()), ms(last.Load()))
	if failed.Load() > 0 {
		return fmt.Errorf("%d waiters did not pair", failed.Load())
	}
	return nil
}

// pairWaiter pairs the waiter on fd, which asked for key, with a new peer
// and checks that a byte crosses.
func pairWaiter(ctx context.Context, path string, key []byte, fd int) error {
	peer, err := libspbroker.GetPair(ctx, path, key, libspbroker.ModeClient)
	if err != nil {
		return err
	}
	defer peer.Close()
	mine, err := libspbroker.ReceiveSetPair(fd)
	if err != nil {
		return fmt.Errorf("the waiter's SET_PAIR: %w", err)
	}
	defer unix.Close(mine)
	return exchange(mine, int(peer.Fd()))
}

// startManaged starts bin with args under m, its output on our standard
// error, and waits for READY=1.
func startManaged(m *testutil.Manager, bin string, args []string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := m.Start(cmd, os.Environ()); err != nil {
		return nil, err
	}
	if _, err := m.WaitFor("READY=1", 20*time.Second); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	return cmd, nil
}

// waitKept polls the daemon's status at ctl until n waiting clients are
// kept in the store.
func waitKept(ctl string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		raw, err := control.Call(context.Background(), ctl, control.Request{Command: "status"})
		var st control.Status
		if err == nil {
			err = json.Unmarshal(raw, &st)
		}
		if err == nil && st.Kept >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d waiters kept after %v (%v)", st.Kept, n, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
