package broker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// TestWaitingByModeAndWaitHistogram checks the per-mode waiting gauges
// and the wait histogram the metrics read: each waiter counts in its
// mode while it waits, and each pair observes its waiter's wait once.
func TestWaitingByModeAndWaitHistogram(t *testing.T) {
	e := startBroker(t, nil)
	bl := snapshot(t, e)

	s1 := e.park(t, "by-mode-1", libspbroker.ModeServer)
	n1 := e.park(t, "by-mode-2", libspbroker.ModeNone)
	c1 := e.park(t, "by-mode-3", libspbroker.ModeClient)
	s := e.waitStats(t, "three waiting", func(s broker.Stats) bool { return s.Waiting == 3 })
	assert.Equal(t, [broker.NumModes]int{1, 1, 1}, s.WaitingByMode)
	assert.Zero(t, s.Wait.Count())

	time.Sleep(20 * time.Millisecond) // past the 10 ms bucket
	pairBoth(t, s1, e.request(t, "by-mode-1", libspbroker.ModeClient))
	pairBoth(t, n1, e.request(t, "by-mode-2", libspbroker.ModeNone))
	s = e.waitStats(t, "two paired", func(s broker.Stats) bool { return s.Paired == 2 })
	assert.Equal(t, [broker.NumModes]int{0, 1, 0}, s.WaitingByMode)
	assert.Equal(t, uint64(2), s.Wait.Count())
	var fast uint64
	for i, ub := range broker.WaitBuckets {
		if ub <= 0.01 {
			fast += s.Wait.Counts[i]
		}
	}
	assert.Zero(t, fast, "both waited longer than 10 ms: %v", s.Wait.Counts)
	assert.GreaterOrEqual(t, s.Wait.SumSeconds, 0.04)

	c1.close()
	s = e.waitStats(t, "none waiting", func(s broker.Stats) bool { return s.Waiting == 0 })
	assert.Equal(t, [broker.NumModes]int{}, s.WaitingByMode)
	assert.Equal(t, uint64(2), s.Wait.Count(), "a waiter that left is no wait observed")
	bl.verify(t)
}

// TestCarryUpgrades checks that the upgrade count is carried like the
// totals, and the histogram is not.
func TestCarryUpgrades(t *testing.T) {
	e := startBroker(t, nil)
	e.Carry(broker.Stats{Upgrades: 2, Paired: 5})
	e.CountUpgrade()
	s := e.Stats()
	assert.Equal(t, uint64(3), s.Upgrades)
	assert.Equal(t, uint64(5), s.Paired)
	assert.Zero(t, s.Wait.Count())
}
