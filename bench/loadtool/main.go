// Command loadtool drives a broker for the restart and soak measurements
// (bench/upgrade.sh, bench/soak.sh), alongside spload:
//
//	loadtool waiters -s SOCKET -n N     park N waiters, then on stdin EOF pair
//	                                    each with a fresh partner and report
//	loadtool hostile -s SOCKET -d DUR   misbehave at a steady rate for DUR
//	loadtool manager -D DIR -b BIN -n N -i DUR -- ARGS...
//	                                    run BIN ARGS as systemd would, with
//	                                    sockets and a file descriptor store
//	                                    in DIR, and restart it N times
//	                                    (-k: by SIGKILL)
//	loadtool survive -n N (-b BIN | -s SOCKET [-c CTL] -kill CMD) [-- ARGS...]
//	                                    park N waiters, SIGKILL the broker,
//	                                    and time until all of them pair again
//
// It speaks the protocol with raw system calls and libspbroker's encoder.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/libspbroker"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadtool waiters|hostile|manager|survive [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	sock := fs.String("s", "", "broker socket")
	n := fs.Int("n", 1000, "waiters to park")
	dur := fs.Duration("d", time.Minute, "how long to misbehave")
	rate := fs.Int("r", 200, "hostile connections per second")
	dir := fs.String("D", "", "manager: the directory of the sockets")
	bin := fs.String("b", "", "manager: the daemon's binary")
	every := fs.Duration("i", 2*time.Second, "manager: time between restarts")
	killCmd := fs.String("kill", "", "survive: the command that kills the broker at -s")
	ctl := fs.String("c", "", "survive: the control socket, to wait until every waiter is kept")
	crash := fs.Bool("k", false, "manager: restart by SIGKILL, not SIGTERM")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "waiters":
		err = waiters(*sock, *n)
	case "hostile":
		err = hostile(*sock, *dur, *rate)
	case "manager":
		err = manage(*dir, *bin, *n, *every, *crash, fs.Args())
	case "survive":
		err = survive(*sock, *ctl, *bin, *killCmd, *n, fs.Args())
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtool:", err)
		os.Exit(1)
	}
}

func dial(path string) (int, error) {
	return libspbroker.Connect(path, false)
}

func getPair(key string, mode libspbroker.Mode) []byte {
	return libspbroker.NewGetPair([]byte(key), mode).AppendEncode(nil)
}

// waiters parks n clients, says "parked", waits for stdin to end, then
// pairs every one of them and checks each pair carries a byte.
func waiters(path string, n int) error {
	run := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	fds := make([]int, n)
	for i := range fds {
		fd, err := dial(path)
		if err != nil {
			return fmt.Errorf("waiter %d: %w", i, err)
		}
		if _, err := unix.Write(fd, getPair(fmt.Sprintf("w-%s-%d", run, i), libspbroker.ModeServer)); err != nil {
			return fmt.Errorf("waiter %d: %w", i, err)
		}
		fds[i] = fd
	}
	fmt.Println("parked")
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	failed := 0
	for i, fd := range fds {
		// Without retries: a client the broker refuses counts as a failure
		// instead of asking for ever.
		peer, err := (&libspbroker.Config{NoRetry: true}).GetPair(context.Background(), path, []byte(fmt.Sprintf("w-%s-%d", run, i)), libspbroker.ModeClient)
		if err == nil {
			var mine int
			mine, err = libspbroker.ReceiveSetPair(fd)
			if err == nil {
				err = exchange(mine, int(peer.Fd()))
				unix.Close(mine)
			}
			peer.Close()
		}
		unix.Close(fd)
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "waiter %d: %v\n", i, err)
		}
	}
	fmt.Printf("waiters=%d paired_after=%d failed=%d\n", n, n-failed, failed)
	if failed > 0 {
		return errors.New("some waiters did not pair")
	}
	return nil
}

func exchange(a, b int) error {
	if _, err := unix.Write(a, []byte{'x'}); err != nil {
		return err
	}
	var buf [1]byte
	if _, err := unix.Read(b, buf[:]); err != nil || buf[0] != 'x' {
		return fmt.Errorf("no byte across the pair: %v", err)
	}
	return nil
}

// hostile opens connections that break the protocol in each way the
// broker must survive, at rate per second, for d.
func hostile(path string, d time.Duration, rate int) error {
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	end := time.Now().Add(d)
	var open []int // silent clients, closed a little later
	counts := map[string]int{}
	for time.Now().Before(end) {
		<-tick.C
		fd, err := dial(path)
		if err != nil {
			counts["connect_error"]++
			continue
		}
		msg := getPair(fmt.Sprintf("h-%d", rand.Int()), libspbroker.Mode(rand.IntN(3)))
		switch k := rand.IntN(7); k {
		case 0: // garbage
			junk := make([]byte, 1040)
			for i := range junk {
				junk[i] = byte(rand.Int())
			}
			unix.Write(fd, junk)
			counts["garbage"]++
		case 1: // cut short, then closed
			unix.Write(fd, msg[:rand.IntN(1039)+1])
			counts["truncated"]++
		case 2: // bad version
			msg[4] = 7
			unix.Write(fd, msg)
			counts["bad_version"]++
		case 3: // a descriptor along with the request
			unix.Sendmsg(fd, msg, unix.UnixRights(int(os.Stdin.Fd())), nil, 0)
			counts["with_fd"]++
		case 4: // connect and close
			counts["close"]++
		case 5: // a valid request, then gone
			unix.Write(fd, msg)
			counts["vanish"]++
		case 6: // silent for a while
			open = append(open, fd)
			counts["silent"]++
			if len(open) > 50 {
				unix.Close(open[0])
				open = open[1:]
			}
			continue
		}
		unix.Close(fd)
	}
	for _, fd := range open {
		unix.Close(fd)
	}
	fmt.Printf("hostile %v\n", counts)
	return nil
}
