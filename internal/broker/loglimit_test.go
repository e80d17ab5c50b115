package broker

import (
	"testing"
	"time"
)

// TestLogLimit lets logBurst lines through each limitLogEvery, and the
// first line of a new period says how many were left out.
func TestLogLimit(t *testing.T) {
	var r logLimit
	now := int64(time.Second)
	for i := range logBurst {
		ok, s := r.allow(now)
		if !ok || s != 0 {
			t.Fatalf("line %d: allow = %v, %d", i, ok, s)
		}
	}
	for i := range 5 {
		if ok, _ := r.allow(now + int64(i)); ok {
			t.Fatalf("line %d past the burst allowed", logBurst+i)
		}
	}
	if ok, s := r.allow(now + int64(limitLogEvery) - 1); ok || s != 0 {
		t.Fatalf("before the period ends: allow = %v, %d", ok, s)
	}
	ok, s := r.allow(now + int64(limitLogEvery))
	if !ok || s != 6 {
		t.Fatalf("a new period: allow = %v, %d; want true, 6", ok, s)
	}
	if ok, s := r.allow(now + int64(limitLogEvery)); !ok || s != 0 {
		t.Fatalf("next line: allow = %v, %d; want true, 0", ok, s)
	}
}
