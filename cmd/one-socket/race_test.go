//go:build race

package main

import "os"

// A race-enabled test run also builds the daemon with the race detector,
// so that its races fail the process tests (the detector exits with 66).
// The detector normally sleeps a second at exit to collect late reports;
// the daemon's goroutines have all stopped by then, and the tests start
// dozens of daemons.
func init() {
	buildFlags = append(buildFlags, "-race")
	if os.Getenv("GORACE") == "" {
		daemonExtraEnv = append(daemonExtraEnv, "GORACE=atexit_sleep_ms=50")
	}
}
