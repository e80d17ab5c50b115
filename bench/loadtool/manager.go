package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/one-socket/one-socket/internal/testutil"
)

// manage runs the daemon bin with args the way systemd runs the shipped
// units, sockets and file descriptor store included (testutil.Manager
// plays systemd's part), and restarts it n times, every interval, as
// `systemctl restart` does: SIGTERM, wait for the exit, start again. It
// says "ready" once the first instance serves, a line per restart with the
// time from SIGTERM to the next READY=1. With crash, SIGKILL instead of
// SIGTERM. It begins restarting once it
// reads a line from stdin, and after the restarts waits for stdin to end
// before stopping the last instance.
func manage(dir, bin string, n int, every time.Duration, crash bool, args []string) error {
	m, err := testutil.NewManager(dir, true)
	if err != nil {
		return err
	}
	defer m.Close()
	start := func() (*exec.Cmd, error) { return startManaged(m, bin, args) }
	cmd, err := start()
	if err != nil {
		return err
	}
	fmt.Println("ready", m.BrokerPath)
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the word to begin: %w", err)
	}
	var worst time.Duration
	for i := 1; i <= n; i++ {
		time.Sleep(every)
		t0 := time.Now()
		if crash {
			// As the OOM killer would, and Restart=on-failure after it.
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
		} else {
			cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("restart %d: the old instance: %w", i, err)
			}
		}
		if cmd, err = start(); err != nil {
			return fmt.Errorf("restart %d: %w", i, err)
		}
		down := time.Since(t0)
		worst = max(worst, down)
		fmt.Printf("restart %d down_ms=%.1f\n", i, float64(down.Microseconds())/1000)
	}
	fmt.Printf("restarts=%d worst_down_ms=%.1f\n", n, float64(worst.Microseconds())/1000)
	io.Copy(io.Discard, in)
	cmd.Process.Signal(syscall.SIGTERM)
	return cmd.Wait()
}
