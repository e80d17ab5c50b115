package broker

// Every list of connections in the engine is one fdList: the handshake and
// poll-delay deadline lists, the max-wait list and each same-key queue of
// the index. They are intrusive, threaded through links stored in the
// conns themselves and naming descriptors, so that a list costs no
// allocation and the garbage collector has no pointers to walk.

// linkID names one of the links a conn has, one per list it can be on at
// the same time.
type linkID uint8

const (
	deadlineLink linkID = iota // l.reading or l.pending
	maxWaitLink                // l.waiting
	queueLink                  // its same-key queue in l.index
	numLinks
)

// link holds a conn's neighbours on one list, as descriptor numbers.
type link struct{ prev, next int32 }

// unlinked is the links of a conn on no list.
var unlinked = [numLinks]link{{noFD, noFD}, {noFD, noFD}, {noFD, noFD}}

// fdList is a FIFO of conns threaded through link by of each. It stores
// only its head, and the head's prev is the tail: a list is one word, which
// lets the index keep a whole queue as its map value.
type fdList struct {
	head int32
	by   linkID
}

// newList returns an empty list threaded through link by.
func newList(by linkID) fdList { return fdList{head: noFD, by: by} }

// push appends fd to the tail of q.
func (q *fdList) push(conns []conn, fd int32) {
	c := &conns[fd].links[q.by]
	c.next = noFD
	if q.head == noFD {
		q.head = fd
		c.prev = fd
		return
	}
	h := &conns[q.head].links[q.by]
	conns[h.prev].links[q.by].next = fd
	c.prev = h.prev
	h.prev = fd
}

// remove takes fd, which must be on q, off q.
func (q *fdList) remove(conns []conn, fd int32) {
	c := &conns[fd].links[q.by]
	switch {
	case c.next != noFD:
		conns[c.next].links[q.by].prev = c.prev
	case q.head != fd:
		conns[q.head].links[q.by].prev = c.prev // fd was the tail
	}
	if q.head == fd {
		q.head = c.next
	} else {
		conns[c.prev].links[q.by].next = c.next
	}
	*c = link{noFD, noFD}
}

// next returns the conn after fd on q, or noFD.
func (q *fdList) next(conns []conn, fd int32) int32 { return conns[fd].links[q.by].next }

// tail returns the conn at the tail of q, or noFD when q is empty.
func (q *fdList) tail(conns []conn) int32 {
	if q.head == noFD {
		return noFD
	}
	return conns[q.head].links[q.by].prev
}

// prev returns the conn before fd on q, or noFD when fd is the head: the
// head's own prev is the tail, which a walk from the tail must not reach
// again.
func (q *fdList) prev(conns []conn, fd int32) int32 {
	if fd == q.head {
		return noFD
	}
	return conns[fd].links[q.by].prev
}
