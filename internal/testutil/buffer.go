// Package testutil holds helpers shared by the tests that run One Socket's
// programs as real processes.
package testutil

import (
	"bytes"
	"sync"
)

// LockedBuffer collects a process's output while a test reads it: the
// process's copying goroutine writes as the test calls String.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
