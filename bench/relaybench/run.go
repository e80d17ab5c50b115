package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A config is one measurement: a path and what runs over it.
type config struct {
	name  string
	path  path
	socat []string // socat's options
	env   []string // added to one-socketctl's environment
	// A stream, with a descriptor every fdEvery bytes if that is not 0;
	// else round trips.
	stream  bool
	fdEvery int64
	base    string // the configuration the derived figures compare with
}

func configs(fdEvery int64) []config {
	fdName := fmt.Sprintf("+fd/%dKiB", fdEvery>>10)
	return []config{
		{name: "lat direct", path: direct},
		{name: "lat relay", path: relay, base: "lat direct"},
		{name: "lat relay GOMAXPROCS=1", path: relay, env: []string{"GOMAXPROCS=1"}, base: "lat direct"},
		{name: "lat relay2", path: relay2, base: "lat direct"},
		{name: "lat floor-relay", path: floorRelay, base: "lat direct"},
		{name: "lat naive-relay", path: naiveRelay, base: "lat direct"},
		{name: "lat handoff", path: handoff, base: "lat direct"},
		{name: "lat handoff-holds", path: handoffHolds, base: "lat direct"},
		{name: "tput direct", path: direct, stream: true},
		{name: "tput relay", path: relay, stream: true, base: "tput direct"},
		{name: "tput relay GOMAXPROCS=1", path: relay, env: []string{"GOMAXPROCS=1"}, stream: true, base: "tput direct"},
		{name: "tput floor-relay", path: floorRelay, stream: true, base: "tput direct"},
		{name: "tput naive-relay", path: naiveRelay, stream: true, base: "tput direct"},
		{name: "tput splice-relay", path: spliceRelay, stream: true, base: "tput direct"},
		{name: "tput socat", path: socat, stream: true, base: "tput direct"},
		{name: "tput socat-b64k", path: socat, socat: []string{"-b", "65536"}, stream: true, base: "tput direct"},
		{name: "tput direct" + fdName, path: direct, stream: true, fdEvery: fdEvery},
		{name: "tput relay" + fdName, path: relay, stream: true, fdEvery: fdEvery, base: "tput direct" + fdName},
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var b bench
	fs.StringVar(&b.sock, "s", "", "the broker's socket (required)")
	fs.StringVar(&b.ctl, "ctl", "", "one-socketctl (required)")
	fs.StringVar(&b.dir, "dir", "", "a directory for the sockets, short enough for sun_path (required)")
	rounds := fs.Int("r", 5, "rounds; configurations interleave within each")
	n := fs.Int("n", 20000, "timed round trips per latency run")
	warm := fs.Int("w", 2000, "warm-up round trips before them")
	total := fs.Int64("bytes", 2<<30, "bytes per stream")
	fdEvery := fs.Int64("fd-every", 1<<20, "a descriptor every this many bytes in the +fd streams (a multiple of 64 KiB)")
	limit := fs.Duration("limit", 10*time.Second, "the longest a stream may run; a slower one is cut short and timed as far as it got")
	only := fs.String("only", "", "run only the configurations whose name matches this regular expression")
	logPath := fs.String("o", "", "append the raw lines to this file too")
	fs.Parse(args)
	switch {
	case b.sock == "" || b.ctl == "" || b.dir == "":
		return errors.New("-s, -ctl and -dir are required")
	case *fdEvery <= 0 || *fdEvery%chunkSize != 0:
		return fmt.Errorf("-fd-every %d: want a positive multiple of %d", *fdEvery, chunkSize)
	case *n < 100:
		return errors.New("-n: at least 100 round trips")
	}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	b.socat, _ = exec.LookPath("socat")
	sel, err := regexp.Compile(*only)
	if err != nil {
		return err
	}
	var out io.Writer = os.Stdout
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		out = io.MultiWriter(os.Stdout, f)
	}

	var cs []config
	for _, c := range configs(*fdEvery) {
		if c.path == socat && b.socat == "" {
			fmt.Fprintf(os.Stderr, "relaybench: no socat; skipping %s\n", c.name)
			continue
		}
		if sel.MatchString(c.name) {
			cs = append(cs, c)
		}
	}
	all := map[string][]*result{}
	failed := 0
	for round := 1; round <= *rounds; round++ {
		got := map[string]*result{}
		for _, c := range cs {
			r, err := b.measure(c, *warm, *n, *total, *limit)
			if err != nil {
				fmt.Fprintf(out, "%s | round=%d error=%q\n", c.name, round, err.Error())
				failed++
				continue
			}
			if base := got[c.base]; base != nil {
				derive(r, base)
			}
			got[c.name] = r
			all[c.name] = append(all[c.name], r)
			fmt.Fprintf(out, "%s round=%d\n", r, round)
		}
	}
	fmt.Fprintf(out, "\nmedians over %d rounds [min-max]\n", *rounds)
	for _, c := range cs {
		if rs := all[c.name]; len(rs) > 0 {
			fmt.Fprintln(out, summary(c.name, rs))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d runs failed", failed)
	}
	return nil
}

// summarize prints the medians of the raw lines in the files named, which
// run -o wrote, over every round of every run in them.
func summarize(files []string) error {
	all := map[string][]*result{}
	var order []string
	rounds := 0
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(line, " | ")
			if !ok || strings.Contains(rest, "error=") {
				continue
			}
			r := newResult(name)
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return fmt.Errorf("%s: %q: %v", name, kv, err)
				}
				if k != "round" {
					r.set(k, f)
				}
			}
			if _, seen := all[name]; !seen {
				order = append(order, name)
			}
			all[name] = append(all[name], r)
			rounds = max(rounds, len(all[name]))
		}
	}
	fmt.Printf("medians over %d rounds [min-max]\n", rounds)
	for _, name := range order {
		fmt.Println(summary(name, all[name]))
	}
	return nil
}

// measure joins c's path and measures over it.
func (b *bench) measure(c config, warm, n int, total int64, limit time.Duration) (*result, error) {
	far := "echo"
	if c.stream {
		far = "sink"
	}
	s, err := b.join(c.path, far, c.socat, c.env)
	if err != nil {
		return nil, err
	}
	r := newResult(c.name)
	if c.stream {
		err = stream(r, s, total, c.fdEvery, limit)
	} else {
		err = latency(r, s, warm, n)
	}
	if err != nil {
		s.abort()
		return nil, err
	}
	return r, s.finish()
}

// derive adds r's figures relative to base's, measured in the same round:
// the latency a path adds, or the share of base's throughput it keeps.
func derive(r, base *result) {
	for _, k := range []string{"p50_us", "p90_us", "p99_us"} {
		if v, ok := r.vals[k]; ok {
			r.set("added_"+k, v-base.vals[k])
		}
	}
	if v, ok := r.vals["MBps"]; ok && base.vals["MBps"] > 0 {
		r.set("pct_of_base", 100*v/base.vals["MBps"])
	}
}

// summary prints each figure's median over the rounds, and its range.
func summary(name string, rs []*result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s", name)
	for _, k := range rs[0].keys {
		var vs []float64
		for _, r := range rs {
			if v, ok := r.vals[k]; ok {
				vs = append(vs, v)
			}
		}
		slices.Sort(vs)
		fmt.Fprintf(&b, " %s=%s [%s-%s]", k, num(median(vs)), num(vs[0]), num(vs[len(vs)-1]))
	}
	return b.String()
}

func median(vs []float64) float64 {
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}
