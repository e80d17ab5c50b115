package handover

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/broker"
)

// TestWaiterName checks that every id has a name that parses back to it,
// and that no other name parses: a start must not take another
// descriptor for a waiter.
func TestWaiterName(t *testing.T) {
	for _, id := range []uint64{1, 9, 10, 4242, 1<<64 - 1} {
		got, ok := WaiterID(WaiterName(id))
		assert.True(t, ok, "%d", id)
		assert.Equal(t, id, got)
	}
	assert.Equal(t, "w17", WaiterName(17))
	for _, name := range []string{"", "w", "w0", "w01", "w-1", "w+1", "wx", "W1", "x1", "w1 ",
		"w" + strconv.FormatUint(1<<64-1, 10) + "0", "w18446744073709551616"} {
		_, ok := WaiterID(name)
		assert.False(t, ok, "%q", name)
	}
}

// TestBusy checks that only a full queue at the manager is the engine's
// ErrStoreBusy, and that the cause stays visible.
func TestBusy(t *testing.T) {
	err := busy(fmt.Errorf("sd_notify: %w", unix.EAGAIN))
	assert.ErrorIs(t, err, broker.ErrStoreBusy)
	assert.ErrorIs(t, err, unix.EAGAIN)
	other := errors.New("sd_notify: no such file")
	assert.Equal(t, other, busy(other))
	assert.NoError(t, busy(nil))
}
