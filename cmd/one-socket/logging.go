package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The values of --log-format.
const (
	logFormatText = "text"
	logFormatJSON = "json"
)

// newLogHandler makes the handler the daemon logs through: format
// (logFormatText or logFormatJSON) written to w, at opts' level. When
// journal is set, each line starts with its syslog priority in the form
// sd-daemon(3) describes ("<4>" for a warning), which journald strips and
// keeps as the message's priority.
func newLogHandler(w io.Writer, format string, journal bool, opts *slog.HandlerOptions) slog.Handler {
	var jw *journalWriter
	if journal {
		jw = &journalWriter{w: w}
		w = jw
	}
	var h slog.Handler
	if format == logFormatJSON {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	if jw != nil {
		h = &journalHandler{h: h, jw: jw}
	}
	return h
}

// journalWriter writes each record's line with the priority prefix that
// journalHandler set for it. slog's handlers write a record in one call.
type journalWriter struct {
	mu     sync.Mutex // held by journalHandler.Handle around the record's write
	w      io.Writer
	prefix string
	buf    []byte
}

func (j *journalWriter) Write(p []byte) (int, error) {
	j.buf = append(append(j.buf[:0], j.prefix...), p...)
	if _, err := j.w.Write(j.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// journalHandler gives each record's line its priority prefix.
type journalHandler struct {
	h  slog.Handler
	jw *journalWriter
}

func (j *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return j.h.Enabled(ctx, l)
}

func (j *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	j.jw.mu.Lock()
	defer j.jw.mu.Unlock()
	j.jw.prefix = syslogPrefix(r.Level)
	return j.h.Handle(ctx, r)
}

func (j *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &journalHandler{h: j.h.WithAttrs(attrs), jw: j.jw}
}

func (j *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{h: j.h.WithGroup(name), jw: j.jw}
}

// syslogPrefix is the sd-daemon(3) prefix for level: SD_DEBUG, SD_INFO,
// SD_WARNING or SD_ERR.
func syslogPrefix(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "<7>"
	case l < slog.LevelWarn:
		return "<6>"
	case l < slog.LevelError:
		return "<4>"
	default:
		return "<3>"
	}
}

// stderrIsJournal reports whether standard error is the journal's stream,
// as systemd.exec(5) says to tell: $JOURNAL_STREAM holds the device and
// inode numbers of the stream, "DEV:INO", and they match those of file
// descriptor 2. A stderr redirected since (or inherited by a process the
// service started with another stderr) no longer matches.
func stderrIsJournal(getenv func(string) string) bool {
	v := getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	var dev, ino uint64
	if n, err := fmt.Sscanf(strings.TrimSpace(v), "%d:%d", &dev, &ino); err != nil || n != 2 {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(2, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// logToJournal reports whether the log goes to the journal: to standard
// error, when that is the journal's stream.
func logToJournal(logw io.Writer) bool {
	return logw == io.Writer(os.Stderr) && stderrIsJournal(os.Getenv)
}
