package libspbroker

import "time"

// SetRestTimeout sets how long a receive waits for the rest of a started
// message and returns a function that restores the old value.
func SetRestTimeout(d time.Duration) (restore func()) {
	old := restTimeout
	restTimeout = d
	return func() { restTimeout = old }
}

// Stages of a read, as ReadSetPairFrom passes them to its recv.
const (
	StageFirst   = int(stageFirst)
	StageRest    = int(stageRest)
	StagePadding = int(stagePadding)
)

// ReadSetPairFrom runs the SET_PAIR assembler shared by both receive paths
// over a scripted recv.
func ReadSetPairFrom(recv func(p, oob []byte, st int) (n, oobn, flags int, err error)) (int, error) {
	return readSetPair(func(p, oob []byte, st stage) (int, int, int, error) {
		return recv(p, oob, int(st))
	})
}

// Backoff is the wait after the nth failed attempt of GetPair, with the
// jitter given instead of drawn.
func Backoff(n int, limit time.Duration, jitter float64) time.Duration {
	return backoff(n, limit, jitter)
}

// Retryable reports whether GetPair asks again after err.
func Retryable(err error) bool { return retryable(err) }

// SetRetryHook makes GetPair call hook with each failure it is about to
// retry, and returns a function that removes it.
func SetRetryHook(hook func(error)) (restore func()) {
	testHookRetry.Store(&hook)
	return func() { testHookRetry.Store(nil) }
}

// MaxBackoffOf is the cap on the waits of c's GetPair.
func MaxBackoffOf(c *Config) time.Duration { return c.maxBackoff() }
