//go:build linux

package libspbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/scm"
)

// DefaultMaxBackoff is the longest wait between two attempts of GetPair
// when Config.MaxBackoff does not say.
const DefaultMaxBackoff = time.Second

// initialBackoff is the wait after the first failed attempt; each further
// failure doubles it, up to the cap.
const initialBackoff = 10 * time.Millisecond

// testHookRetry, if set, is called with each failure GetPair is about to
// retry, so that tests know a retry happened without timing it.
var testHookRetry atomic.Pointer[func(error)]

// Config holds the options of GetPair and GetPairConn. A nil *Config is
// the zero Config: retry until the context ends, waiting at most
// DefaultMaxBackoff between attempts.
//
// What is retried is what a broker restart looks like to a client: a
// connect that fails with ENOENT (no socket file yet), ECONNREFUSED (a
// socket file nobody listens on) or EAGAIN (the broker's backlog is full),
// and a connection that ends before a whole SET_PAIR (end of file,
// ECONNRESET, EPIPE). Every other error is returned at once: an invalid
// key or mode, EACCES, a protocol violation by the broker, a reply that
// stops half-way, the end of the context. A broker refuses a request by
// closing the connection, so a refusal (policy, quota, --max-wait, drop)
// is retried too, until the context ends.
type Config struct {
	// NoRetry makes the first attempt the only one: its error is
	// returned as it is, as the C library's sp_broker_get_pair does.
	NoRetry bool

	// MaxBackoff caps the wait between two attempts; zero or less means
	// DefaultMaxBackoff. The first wait is 10ms (or MaxBackoff, if
	// smaller), and each failure doubles it; every wait is jittered down
	// by up to half, so that clients cut off together do not return
	// together.
	MaxBackoff time.Duration
}

// GetPair is the package-level GetPair with c's options. The File it
// returns is the caller's; every broker connection it opens it closes.
func (c *Config) GetPair(ctx context.Context, path string, key []byte, mode Mode) (*os.File, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	if err := checkGetPair(key, mode); err != nil {
		return nil, &net.OpError{Op: OpSend, Net: "unix", Addr: addr, Err: err}
	}
	var last error
	for attempts := 1; ; attempts++ {
		op, f, err := getPairOnce(ctx, addr, key, mode)
		if err == nil {
			return f, nil
		}
		if ctx.Err() != nil {
			if last != nil {
				return nil, &RetryError{Err: ctx.Err(), Last: last, Attempts: attempts}
			}
			// What failed is a symptom (a closed connection); say why.
			return nil, &net.OpError{Op: op, Net: "unix", Addr: addr, Err: ctx.Err()}
		}
		if c.noRetry() || !retryable(err) {
			return nil, err
		}
		last = err
		if hook := testHookRetry.Load(); hook != nil {
			(*hook)(err)
		}
		t := time.NewTimer(backoff(attempts, c.maxBackoff(), rand.Float64()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &RetryError{Err: ctx.Err(), Last: last, Attempts: attempts}
		case <-t.C:
		}
	}
}

// GetPairConn is the package-level GetPairConn with c's options. The
// *net.UnixConn it returns is the caller's to close.
func (c *Config) GetPairConn(ctx context.Context, path string, key []byte, mode Mode) (*net.UnixConn, error) {
	f, err := c.GetPair(ctx, path, key, mode)
	if err != nil {
		return nil, err
	}
	uc, err := scm.UnixConn(f)
	if err != nil {
		return nil, &net.OpError{Op: OpReceive, Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: err}
	}
	return uc, nil
}

func (c *Config) noRetry() bool { return c != nil && c.NoRetry }

func (c *Config) maxBackoff() time.Duration {
	if c == nil || c.MaxBackoff <= 0 {
		return DefaultMaxBackoff
	}
	return c.MaxBackoff
}

// RetryError is the error of a GetPair whose context ended after at least
// one attempt had failed in a way GetPair retries. errors.Is matches both
// the context's error and the last failure's, so that a caller whose
// request the broker kept refusing learns why once the deadline passes.
type RetryError struct {
	Err      error // the context's error: context.DeadlineExceeded or context.Canceled
	Last     error // the error of the last attempt that failed, a *net.OpError
	Attempts int   // the attempts made, including one the context cut short
}

// Error says that the context ended, after how many attempts, and how the
// last one failed.
func (e *RetryError) Error() string {
	return fmt.Sprintf("spbroker: get pair: %v after %d attempts; the last failure: %v", e.Err, e.Attempts, e.Last)
}

// Unwrap returns the context's error and the last failure.
func (e *RetryError) Unwrap() []error { return []error{e.Err, e.Last} }

// Timeout reports whether the context's deadline ended the attempts.
func (e *RetryError) Timeout() bool { return errors.Is(e.Err, context.DeadlineExceeded) }

// retryable reports whether err, from one attempt of GetPair, is what a
// broker restart looks like: no broker to connect to yet, or a connection
// that ended without a SET_PAIR.
func retryable(err error) bool {
	if errors.Is(err, ErrProtocol) {
		return false // the broker answered, wrongly: asking again will not help
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == OpDial && errors.Is(err, unix.EAGAIN) {
		return true // the backlog is full: a busy or restarting broker
	}
	for _, target := range []error{unix.ENOENT, unix.ECONNREFUSED, io.EOF, io.ErrUnexpectedEOF, unix.ECONNRESET, unix.EPIPE} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// backoff returns the wait after the nth failed attempt (n >= 1): the
// initial wait doubled n-1 times, capped at limit, then cut by up to half
// as jitter, a number in [0, 1], says (0 cuts half, 1 nothing). It never
// exceeds limit.
func backoff(n int, limit time.Duration, jitter float64) time.Duration {
	d := min(initialBackoff, limit)
	for i := 1; i < n && d < limit; i++ {
		d = min(2*d, limit)
	}
	jitter = min(max(jitter, 0), 1)
	return d/2 + time.Duration(jitter*float64(d-d/2))
}
