package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartProcKeepsOutput checks that a writer the caller set gets its
// stream and Log the other.
func TestStartProcKeepsOutput(t *testing.T) {
	var stdout LockedBuffer
	cmd := exec.Command("/bin/sh", "-c", "echo out; echo err >&2")
	cmd.Stdout = &stdout
	p := StartProc(t, "sh", cmd)
	<-p.Done()
	if p.Err != nil || stdout.String() != "out\n" || p.Log.String() != "err\n" {
		t.Fatalf("err %v, stdout %q, log %q", p.Err, stdout.String(), p.Log.String())
	}
}

// TestKill checks that Kill ends a process StartProc started, its child
// too, and one the caller started without a process group of its own.
func TestKill(t *testing.T) {
	p := StartProc(t, "group", exec.Command("/bin/sh", "-c", "sleep 600 & echo $!; wait"))
	p.WaitFor(t, "the child's pid", func() bool { return strings.HasSuffix(p.Log.String(), "\n") })
	child := "/proc/" + strings.TrimSpace(p.Log.String()) + "/stat"
	p.Kill()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(child)
		if err != nil || strings.Contains(string(b), ") Z ") {
			break // gone, or a zombie left to init
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child outlived Kill: %s", b)
		}
	}

	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	q := WatchProc(t, "sleep", cmd)
	q.Kill()
	if !q.Exited() {
		t.Fatal("Kill returned before the process exited")
	}
}

// The module's root is found from a package two directories below it.
func TestModuleRoot(t *testing.T) {
	want, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := moduleRoot(); err != nil || got != want {
		t.Fatalf("moduleRoot() = %q, %v; want %q", got, err, want)
	}
}
