package broker

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// items returns q's descriptors head first, and checks on the way that the
// head's prev is the tail, that every other prev is its neighbour, and
// that tail and prev walk it back.
func items(t *testing.T, conns []conn, q *fdList) []int32 {
	t.Helper()
	var out []int32
	prev := noFD
	for fd := q.head; fd != noFD; fd = q.next(conns, fd) {
		if prev != noFD {
			require.Equal(t, prev, conns[fd].links[q.by].prev, "prev of %d", fd)
		}
		out = append(out, fd)
		prev = fd
	}
	if q.head != noFD {
		require.Equal(t, prev, conns[q.head].links[q.by].prev, "the head's prev is not the tail")
	}
	require.Equal(t, prev, q.tail(conns), "tail")
	// Backwards from the tail, the same conns, ending at the head.
	var back []int32
	for fd := q.tail(conns); fd != noFD; fd = q.prev(conns, fd) {
		require.Less(t, len(back), len(out), "the walk back does not end at the head")
		back = append(back, fd)
	}
	slices.Reverse(back)
	require.Equal(t, out, back, "walked back from the tail")
	return out
}

func TestListPushRemove(t *testing.T) {
	conns := make([]conn, 8)
	q := newList(deadlineLink)
	require.Empty(t, items(t, conns, &q))

	for fd := int32(0); fd < 5; fd++ {
		q.push(conns, fd)
	}
	require.Equal(t, []int32{0, 1, 2, 3, 4}, items(t, conns, &q))

	q.remove(conns, 2) // middle
	require.Equal(t, []int32{0, 1, 3, 4}, items(t, conns, &q))
	q.remove(conns, 0) // head
	require.Equal(t, []int32{1, 3, 4}, items(t, conns, &q))
	q.remove(conns, 4) // tail
	require.Equal(t, []int32{1, 3}, items(t, conns, &q))
	require.Equal(t, link{noFD, noFD}, conns[4].links[deadlineLink], "a removed conn keeps no links")

	q.push(conns, 0) // a removed conn can come back
	require.Equal(t, []int32{1, 3, 0}, items(t, conns, &q))
	for _, fd := range []int32{3, 0, 1} {
		q.remove(conns, fd)
	}
	require.Equal(t, noFD, q.head)

	q.push(conns, 6) // and an emptied list starts again
	require.Equal(t, []int32{6}, items(t, conns, &q))
	q.remove(conns, 6)
	require.Equal(t, noFD, q.head)
}

// A conn is on several lists at once, one per link: changing one list
// leaves the others as they were.
func TestListsShareConns(t *testing.T) {
	conns := make([]conn, 4)
	var qs [numLinks]fdList
	for by := range numLinks {
		qs[by] = newList(by)
	}
	for fd := int32(0); fd < 4; fd++ {
		qs[deadlineLink].push(conns, fd)
		qs[maxWaitLink].push(conns, 3-fd)
		if fd%2 == 0 {
			qs[queueLink].push(conns, fd)
		}
	}
	qs[maxWaitLink].remove(conns, 1)
	qs[queueLink].remove(conns, 0)
	require.Equal(t, []int32{0, 1, 2, 3}, items(t, conns, &qs[deadlineLink]))
	require.Equal(t, []int32{3, 2, 0}, items(t, conns, &qs[maxWaitLink]))
	require.Equal(t, []int32{2}, items(t, conns, &qs[queueLink]))
}
