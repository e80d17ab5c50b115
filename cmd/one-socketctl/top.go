package main

// top: a live view of the broker in the terminal, from the control
// socket's status and list, refreshed each second. Plain ANSI escapes on
// the alternate screen, termios through x/sys/unix; nothing else.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/control"
)

// topInterval is the time between two frames.
const topInterval = time.Second

// Terminal escapes: the alternate screen, the cursor, clearing.
const (
	escEnter     = "\x1b[?1049h\x1b[?25l" // alternate screen on, cursor hidden
	escLeave     = "\x1b[?25h\x1b[?1049l" // cursor shown, alternate screen off
	escHome      = "\x1b[H"
	escClearLine = "\x1b[K"
	escClearDown = "\x1b[J"
)

// sample is what one round of questions to the daemon answered.
type sample struct {
	at      time.Time // when the answers came
	status  control.Status
	waiters []control.Waiter
	err     string // why there are no answers, if so
}

// fetch asks the daemon for its status and its waiting clients.
func (a *app) fetch(o *options, path string) *sample {
	timeout := cmp.Or(o.timeout, defaultTimeout)
	s := &sample{}
	ask := func(cmd string, v any) bool {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		res, err := control.Call(ctx, path, control.Request{Command: cmd})
		if err == nil {
			err = json.Unmarshal(res, v)
		}
		if err != nil {
			s.err = describeControlError(err, path, timeout, "top")
			return false
		}
		return true
	}
	if ask(control.CmdStatus, &s.status) {
		ask(control.CmdList, &s.waiters)
	}
	s.at = time.Now()
	return s
}

// refusal is one counter of clients turned away, as top shows it.
type refusal struct {
	name  string
	short string // for a short screen
	get   func(*control.Status) uint64
}

var refusals = []refusal{
	{"refused (limit)", "refused", func(s *control.Status) uint64 { return s.RefusedTotal }},
	{"shed", "shed", func(s *control.Status) uint64 { return s.ShedTotal }},
	{"denied (policy)", "denied", func(s *control.Status) uint64 { return s.DeniedTotal }},
	{"over quota", "quota", func(s *control.Status) uint64 { return s.OverQuotaTotal }},
	{"expired", "expired", func(s *control.Status) uint64 { return s.ExpiredTotal }},
	{"timed out", "timed-out", func(s *control.Status) uint64 { return s.TimedOutTotal }},
	{"protocol errors", "protocol", func(s *control.Status) uint64 {
		var n uint64
		for _, v := range s.ProtocolErrors {
			n += v
		}
		return n
	}},
}

// group is the waiting clients of one key, or of one key prefix.
type group struct {
	name   string
	n      int
	modes  map[string]int
	oldest float64 // seconds
}

// groupName is the row a key belongs to: the key as list shows it, or
// with sep, its text up to and including the first sep.
func groupName(w *control.Waiter, sep string) string {
	if w.KeyText == "" {
		return "0x" + w.KeyHex
	}
	if sep != "" {
		if i := strings.Index(w.KeyText, sep); i >= 0 {
			return w.KeyText[:i+len(sep)] + "*"
		}
	}
	return w.KeyText
}

// groups gathers waiters by groupName, longest waiting first.
func groups(ws []control.Waiter, sep string) []*group {
	byName := map[string]*group{}
	for i := range ws {
		name := groupName(&ws[i], sep)
		g := byName[name]
		if g == nil {
			g = &group{name: name, modes: map[string]int{}}
			byName[name] = g
		}
		g.n++
		g.modes[ws[i].Mode]++
		g.oldest = max(g.oldest, ws[i].WaitedSeconds)
	}
	gs := slices.Collect(maps.Values(byName))
	slices.SortFunc(gs, func(x, y *group) int {
		return cmp.Or(cmp.Compare(y.oldest, x.oldest), cmp.Compare(x.name, y.name))
	})
	return gs
}

// frame is what top draws from cur (and prev, the sample before, for
// rates; nil on the first frame), in lines no wider than width columns and,
// when height > 0, no more than height lines.
func frame(cur, prev *sample, sep string, width, height int) []string {
	var lines []string
	add := func(format string, args ...any) {
		lines = append(lines, fit(fmt.Sprintf(format, args...), width))
	}
	st := &cur.status
	now := cur.at.Format("15:04:05")
	if cur.err != "" && st.PID == 0 {
		add("one-socketctl top  %s", now)
		add("%s", cur.err)
		return pad(lines, height, width)
	}
	up := time.Duration(st.UptimeSeconds * float64(time.Second)).Round(time.Second)
	add("one-socket %s, pid %d, up %v  %s", st.Version, st.PID, up, now)
	if cur.err != "" {
		add("! %s", cur.err)
	}
	var elapsed float64
	if prev != nil && prev.err == "" && prev.status.PID == st.PID {
		elapsed = cur.at.Sub(prev.at).Seconds()
	}
	rate := func(now, before uint64) string {
		if elapsed <= 0 || now < before {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(now-before)/elapsed)
	}
	pct := 0.0
	if st.MaxConns > 0 {
		pct = 100 * float64(st.Conns) / float64(st.MaxConns)
	}
	add("descriptors: %d of %d connections (%.1f%%), %d waiting, %d kept", st.Conns, st.MaxConns, pct, st.Waiting, st.Kept)
	pairRate := "-"
	if prev != nil {
		pairRate = rate(st.PairedTotal, prev.status.PairedTotal)
	}
	add("pairs/s: %s  paired: %d  accepted: %d  vanished: %d", pairRate, st.PairedTotal, st.AcceptedTotal, st.VanishedTotal)
	add("")
	per := func(r refusal) string {
		if prev == nil {
			return "-"
		}
		return rate(r.get(st), r.get(&prev.status))
	}
	if height > 0 && height < len(lines)+len(refusals)+2+5 {
		// A short screen: the refusals on one line, to leave room for
		// the keys.
		line := "refusals:"
		for _, r := range refusals {
			part := fmt.Sprintf(" %s %d", r.short, r.get(st))
			if p := per(r); p != "-" && p != "0.0" {
				part += " (" + p + "/s)"
			}
			if columns(line+part) > width && line != "" {
				add("%s", line)
				line = " "
			}
			line += part
		}
		add("%s", line)
	} else {
		add("%-16s %8s %10s", "REFUSALS", "/s", "TOTAL")
		for _, r := range refusals {
			add("%-16s %8s %10d", r.name, per(r), r.get(st))
		}
	}
	add("")
	gs := groups(cur.waiters, sep)
	head := "KEY"
	if sep != "" {
		head = fmt.Sprintf("KEY (by prefix up to %q)", sep)
	}
	// The key column takes what the counts leave.
	const counts = "  %7s %6s %6s %6s %8s"
	keyWidth := max(width-columns(fmt.Sprintf(counts, "", "", "", "", "")), 8)
	row := func(key string, cols ...any) {
		add("%s"+counts, append([]any{padRight(fit(key, keyWidth), keyWidth)}, cols...)...)
	}
	row(head, "WAITING", "NONE", "CLIENT", "SERVER", "OLDEST")
	if len(gs) == 0 {
		add("no clients waiting")
	}
	room := len(gs)
	if height > 0 {
		room = height - len(lines) - 1 // the last line for the footer
	}
	for i, g := range gs {
		if i == room-1 && i < len(gs)-1 {
			rest := 0
			for _, h := range gs[i:] {
				rest += h.n
			}
			what := "keys"
			if sep != "" {
				what = "rows"
			}
			add("... %d more %s, %d clients", len(gs)-i, what, rest)
			break
		}
		if i >= room {
			break
		}
		row(g.name, fmt.Sprint(g.n), fmt.Sprint(g.modes["none"]), fmt.Sprint(g.modes["client"]),
			fmt.Sprint(g.modes["server"]), age(g.oldest))
	}
	return pad(lines, height, width)
}

// pad fills a frame to height lines, the last being its footer; a frame
// without a height (--once) has none.
func pad(lines []string, height, width int) []string {
	if height <= 0 {
		return lines
	}
	footer := fit(fmt.Sprintf("q quits  %dx%d", width, height), width)
	if len(lines) > height-1 {
		lines = lines[:max(height-1, 0)]
	}
	for len(lines) < height-1 {
		lines = append(lines, "")
	}
	return append(lines, footer)
}

// fit cuts s to width columns, marking a cut with "~". Anything that is
// not printable (an escape in what the daemon says) becomes "?", so
// that only top's own escapes reach the terminal.
func fit(s string, width int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
	if width <= 0 || columns(s) <= width {
		return s
	}
	var b strings.Builder
	used := 0
	for _, r := range s {
		w := runeColumns(r)
		if used+w > width-1 {
			break
		}
		b.WriteRune(r)
		used += w
	}
	return b.String() + "~"
}

func padRight(s string, width int) string {
	if n := columns(s); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s
}

// columns is the width of s on a terminal.
func columns(s string) int {
	n := 0
	for _, r := range s {
		n += runeColumns(r)
	}
	return n
}

// runeColumns is the width of r on a terminal: none for a combining mark,
// two for the wide characters of East Asian scripts and for emoji, one
// for the rest. An approximation of wcwidth(3), enough to keep a line
// from wrapping.
func runeColumns(r rune) int {
	switch {
	case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) || r == 0x200b:
		return 0
	case r >= 0x1100 && r <= 0x115f, r >= 0x2e80 && r <= 0xa4cf && r != 0x303f,
		r >= 0xac00 && r <= 0xd7a3, r >= 0xf900 && r <= 0xfaff, r >= 0xfe30 && r <= 0xfe4f,
		r >= 0xff00 && r <= 0xff60, r >= 0xffe0 && r <= 0xffe6,
		r >= 0x1f300 && r <= 0x1f64f, r >= 0x1f900 && r <= 0x1f9ff, r >= 0x20000 && r <= 0x3fffd:
		return 2
	}
	return 1
}

// winsize returns the terminal's columns and rows, from TIOCGWINSZ.
func winsize(fd int) (width, height int, err error) {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, err
	}
	return int(ws.Col), int(ws.Row), nil
}

// once prints one frame, without escapes, at the terminal's width if
// there is one, else 80 columns.
func (a *app) topOnce(o *options, path string) int {
	s := a.fetch(o, path)
	if s.err != "" {
		a.errorf("%s", s.err)
		return exitFailure
	}
	width := 80
	if f, ok := a.stdout.(*os.File); ok {
		if w, _, err := winsize(int(f.Fd())); err == nil && w > 0 {
			width = w
		}
	}
	for _, l := range frame(s, nil, o.group, width, 0) {
		fmt.Fprintln(a.stdout, strings.TrimRight(l, " "))
	}
	return exitOK
}

func (a *app) top(o *options) int {
	path, err := a.controlPath(o)
	if err != nil {
		a.errorf("%v", err)
		return exitFailure
	}
	out, ok := a.stdout.(*os.File)
	if !ok || o.once {
		return a.topOnce(o, path)
	}
	if _, _, err := winsize(int(out.Fd())); err != nil {
		return a.topOnce(o, path) // not a terminal
	}
	return a.topLive(o, path, out)
}

// topLive draws a frame each second until q, Ctrl-C or a signal to stop.
func (a *app) topLive(o *options, path string, out *os.File) (code int) {
	outFD := int(out.Fd())
	// Keys come from standard input when it is a terminal: without
	// canonical mode or echo, so that q needs no Enter. ISIG stays on:
	// Ctrl-C is SIGINT, caught below.
	keys := make(chan byte, 16)
	var inFD = -1
	var old *unix.Termios
	if in, ok := a.stdin.(*os.File); ok {
		if t, err := unix.IoctlGetTermios(int(in.Fd()), unix.TCGETS); err == nil {
			inFD, old = int(in.Fd()), t
			go func() {
				var b [64]byte
				for {
					n, err := in.Read(b[:])
					for _, c := range b[:n] {
						keys <- c
					}
					if err != nil {
						close(keys)
						return
					}
				}
			}()
		}
	}
	enter := func() {
		if old != nil {
			raw := *old
			raw.Lflag &^= unix.ICANON | unix.ECHO
			raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
			unix.IoctlSetTermios(inFD, unix.TCSETS, &raw)
		}
		io.WriteString(out, escEnter)
	}
	leave := func() {
		io.WriteString(out, escLeave)
		if old != nil {
			unix.IoctlSetTermios(inFD, unix.TCSETS, old)
		}
	}
	enter()
	// On every way out, a panic included (which then goes on).
	defer leave()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGWINCH, syscall.SIGTSTP, syscall.SIGCONT)
	defer signal.Stop(sigs)

	samples := make(chan *sample, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(topInterval)
		defer t.Stop()
		for {
			s := a.fetch(o, path)
			select {
			case samples <- s:
			case <-stop:
				return
			}
			select {
			case <-t.C:
			case <-stop:
				return
			}
		}
	}()

	var cur, prev *sample
	// draw fails when the terminal has gone (a closed ssh connection).
	draw := func() error {
		if cur == nil {
			return nil
		}
		w, h, err := winsize(outFD)
		if err != nil || w <= 0 || h <= 0 {
			w, h = 80, 24
		}
		var b strings.Builder
		b.WriteString(escHome)
		for i, l := range frame(cur, prev, o.group, w, h) {
			if i > 0 {
				b.WriteString("\r\n")
			}
			b.WriteString(l)
			b.WriteString(escClearLine)
		}
		b.WriteString(escClearDown)
		_, err = io.WriteString(out, b.String())
		return err
	}
	for {
		select {
		case s := <-samples:
			if cur != nil && cur.err == "" {
				prev = cur
			}
			if s.err != "" && cur != nil && cur.err == "" {
				// Keep showing the last answers, with the failure.
				s.status, s.waiters = cur.status, cur.waiters
			}
			cur = s
			if err := draw(); err != nil {
				return exitFailure
			}
		case c, ok := <-keys:
			switch {
			case !ok:
				keys = nil // end of input: only signals stop us now
			case c == 'q' || c == 'Q' || c == 3 || c == 4:
				return exitOK
			case c == 12: // Ctrl-L: redraw
				io.WriteString(out, "\x1b[2J")
				draw()
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGWINCH:
				draw()
			case syscall.SIGTSTP:
				// Ctrl-Z: give the terminal back, then stop for real.
				leave()
				unix.Kill(unix.Getpid(), unix.SIGSTOP)
			case syscall.SIGCONT:
				// fg (or a kill -CONT that arrived without a stop):
				// take the terminal again, as it may have changed.
				enter()
				io.WriteString(out, "\x1b[2J")
				draw()
			default:
				return exitOK
			}
		}
	}
}
