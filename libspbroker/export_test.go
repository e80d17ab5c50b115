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
