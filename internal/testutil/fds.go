package testutil

import (
	"os"
	"strings"
)

// CountFDs returns the number of descriptors this process has open, less
// those the Go runtime opens on its own schedule: the poller's epoll and
// eventfd, and files under /sys and /proc (the cgroup CPU-limit files it
// may open after the program started). A leak check that counted them
// would fail whenever the runtime opened one mid-test.
func CountFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, already closed
		}
		switch {
		case strings.HasPrefix(target, "/sys/"), strings.HasPrefix(target, "/proc/"),
			target == "anon_inode:[eventpoll]", target == "anon_inode:[eventfd]":
			continue
		}
		n++
	}
	return n, nil
}
