package main

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// A result is one configuration's figures in one round, in print order.
type result struct {
	name string
	keys []string
	vals map[string]float64
}

func newResult(name string) *result { return &result{name: name, vals: map[string]float64{}} }

func (r *result) set(k string, v float64) {
	if _, ok := r.vals[k]; !ok {
		r.keys = append(r.keys, k)
	}
	r.vals[k] = v
}

func (r *result) String() string {
	s := r.name + " |"
	for _, k := range r.keys {
		s += fmt.Sprintf(" %s=%s", k, num(r.vals[k]))
	}
	return s
}

// num prints a figure to about three significant digits, as many as this
// machine's noise leaves meaningful.
func num(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// settle is how long a relay is left alone before its idle memory is
// read: long enough for it to have started its goroutines and parked.
const settle = 200 * time.Millisecond

// sampleMemory records the relaying process's memory under prefix.
func sampleMemory(r *result, s *setup, prefix string) {
	if s.relay == nil {
		return
	}
	rss, pss, err := memory(s.relay.pid())
	if err != nil {
		return
	}
	r.set(prefix+"_rss_kb", float64(rss))
	r.set(prefix+"_pss_kb", float64(pss))
}

// latency times n round trips of a 64-byte message carrying a memfd,
// after warm round trips: the far end echoes the message with the
// descriptor it received.
func latency(r *result, s *setup, warm, n int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	mfd, err := unix.MemfdCreate("relaybench", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	var want unix.Stat_t
	if err := unix.Fstat(mfd, &want); err != nil {
		return err
	}
	oob := unix.UnixRights(mfd)
	msg := make([]byte, msgSize)
	back := make([]byte, msgSize)
	rc := newReceiver(s.me)
	var fds []int
	var st unix.Stat_t
	trip := func(i int) (time.Duration, error) {
		binary.LittleEndian.PutUint64(msg, uint64(i))
		t0 := time.Now()
		if err := sendAll(s.me, msg, oob); err != nil {
			return 0, err
		}
		ok, got, err := rc.recvFull(back, fds[:0])
		d := time.Since(t0)
		fds = got
		defer closeAll(fds)
		switch {
		case err != nil:
			return 0, err
		case !ok:
			return 0, fmt.Errorf("round trip %d: end of stream", i)
		case binary.LittleEndian.Uint64(back) != uint64(i):
			return 0, fmt.Errorf("round trip %d: another message came back", i)
		case len(fds) != 1:
			return 0, fmt.Errorf("round trip %d: %d descriptors came back", i, len(fds))
		}
		if err := unix.Fstat(fds[0], &st); err != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			return 0, fmt.Errorf("round trip %d: the descriptor that came back is not the memfd", i)
		}
		return d, nil
	}
	time.Sleep(settle)
	sampleMemory(r, s, "idle")
	for i := 0; i < warm; i++ {
		if _, err := trip(i); err != nil {
			return err
		}
	}
	cpu0 := relayCPU(s)
	wall0 := time.Now()
	ds := make([]time.Duration, n)
	for i := range ds {
		if ds[i], err = trip(warm + i); err != nil {
			return err
		}
	}
	wall := time.Since(wall0)
	cpu := relayCPU(s) - cpu0
	slices.Sort(ds)
	us := func(q int) float64 { return float64(ds[(len(ds)-1)*q/100]) / 1e3 }
	r.set("p50_us", us(50))
	r.set("p90_us", us(90))
	r.set("p99_us", us(99))
	r.set("max_us", float64(ds[len(ds)-1])/1e3)
	if s.relay != nil {
		r.set("relay_cpu_us_per_rt", float64(cpu)/1e3/float64(n))
		r.set("relay_cpu_pct", 100*float64(cpu)/float64(wall))
	}
	sampleMemory(r, s, "after")
	return nil
}

// relayCPU is the relaying process's CPU time so far, 0 without one.
func relayCPU(s *setup) time.Duration {
	if s.relay == nil {
		return 0
	}
	d, _ := cpuTime(s.relay.pid())
	return d
}

// chunkSize is the size of each write of a stream, and of each read of the
// sink.
const chunkSize = 64 << 10

// stream sends total bytes in 64 KiB writes, a memfd with the first byte
// of every fdEvery bytes if fdEvery > 0, stopping early after limit. It
// times from the first write until the sink's acknowledgement, which comes
// once the sink has read the end of the stream.
func stream(r *result, s *setup, total, fdEvery int64, limit time.Duration) error {
	mfd, err := unix.MemfdCreate("relaybench", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	oob := unix.UnixRights(mfd)
	buf := make([]byte, chunkSize)
	for i := range buf {
		buf[i] = byte(i)
	}
	time.Sleep(settle)
	sampleMemory(r, s, "idle")
	cpu0 := relayCPU(s)
	t0 := time.Now()
	deadline := t0.Add(limit)
	var sent, fdsSent int64
	for sent < total && time.Now().Before(deadline) {
		var o []byte
		if fdEvery > 0 && sent%fdEvery == 0 {
			o = oob
			fdsSent++
		}
		if err := sendAll(s.me, buf, o); err != nil {
			return err
		}
		sent += chunkSize
	}
	if err := unix.Shutdown(s.me, unix.SHUT_WR); err != nil {
		return err
	}
	ack := make([]byte, ackSize)
	ok, fds, err := newReceiver(s.me).recvFull(ack, nil)
	secs := time.Since(t0).Seconds()
	closeAll(fds)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("no acknowledgement from the sink")
	case int64(binary.LittleEndian.Uint64(ack)) != sent || int64(binary.LittleEndian.Uint64(ack[8:])) != fdsSent:
		return fmt.Errorf("sent %d bytes and %d descriptors, the sink got %d and %d",
			sent, fdsSent, binary.LittleEndian.Uint64(ack), binary.LittleEndian.Uint64(ack[8:]))
	}
	cpu := relayCPU(s) - cpu0
	r.set("MBps", float64(sent)/secs/1e6)
	r.set("MiB", float64(sent>>20))
	r.set("secs", secs)
	if fdsSent > 0 {
		r.set("fds", float64(fdsSent))
	}
	if s.relay != nil {
		r.set("relay_cpu_s_per_GB", cpu.Seconds()/(float64(sent)/1e9))
	}
	sampleMemory(r, s, "after")
	return nil
}

func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}
