// Command one-socket-echo-client is the client of deploy/kubernetes/example.yaml.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/one-socket/one-socket/libspbroker"
)

// retryPause spares a refusing or absent broker a tight loop of requests.
const retryPause = time.Second

func main() {
	key := flag.String("key", os.Getenv("PAIR_KEY"), "the key to pair on (default $PAIR_KEY)")
	interval := flag.Duration("interval", 5*time.Second, "the time between two lines")
	flag.Parse()
	log.SetFlags(0) // the container runtime stamps each line
	if err := libspbroker.CheckKey([]byte(*key)); err != nil || *interval <= 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "one-socket-echo-client: give a key of 1 to 1024 bytes (-key or $PAIR_KEY), a positive -interval and no arguments")
		os.Exit(2)
	}
	path, err := libspbroker.DefaultSocketPath()
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var n int // the number of the last line sent, over all pairs
	for ctx.Err() == nil {
		err := talk(ctx, path, []byte(*key), *interval, &n)
		if ctx.Err() != nil {
			break
		}
		log.Printf("%v; asking for a new pair in %v", err, retryPause)
		select {
		case <-ctx.Done():
		case <-time.After(retryPause):
		}
	}
	log.Printf("stopping: %v", context.Cause(ctx))
}

// talk pairs once and sends a line every interval, logging each reply, until it fails.
func talk(ctx context.Context, path string, key []byte, interval time.Duration, n *int) error {
	// This client logs each failure and pauses itself (main's loop), so
	// that its log shows a broker restart; GetPairConn alone would ask
	// again, silently, until ctx ends.
	c, err := (&libspbroker.Config{NoRetry: true}).GetPairConn(ctx, path, key, libspbroker.ModeClient)
	if err != nil {
		return fmt.Errorf("no pair for %q: %w", key, err)
	}
	// A net.Conn can be closed from another goroutine to end a blocked
	// read.
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	log.Printf("paired with a server for %q", key)

	r := bufio.NewReader(c)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		*n++
		line := fmt.Sprintf("hello %d", *n)
		if _, err := fmt.Fprintln(c, line); err != nil {
			return fmt.Errorf("sending %q: %w", line, err)
		}
		reply, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) {
			return errors.New("the server hung up")
		}
		if err != nil {
			return fmt.Errorf("reading the reply to %q: %w", line, err)
		}
		log.Printf("sent %q, got %q", line, reply[:len(reply)-1])
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
