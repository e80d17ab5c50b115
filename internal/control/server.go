package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/one-socket/one-socket/internal/logsafe"
	"github.com/one-socket/one-socket/libspbroker"
)

// Handler carries out control requests. The server calls it from several
// goroutines at once.
type Handler interface {
	// Status describes the daemon and its counters.
	Status() Status
	// List returns the clients waiting for a peer, longest waiting first.
	List() ([]Waiter, error)
	// Drop disconnects the clients waiting with key and returns how many.
	Drop(key []byte) (int, error)
	// SetLogLevel sets the log level: "debug", "info", "warn" or "error".
	SetLogLevel(level string) error
	// Stop begins a graceful stop and returns at once. It must not wait
	// for Server.Close, which waits for the request that called it.
	Stop()
	// Reload rereads the daemon's access policy and returns a summary of
	// the one in force. On error the old policy stays in force.
	Reload() (string, error)
	// Upgrade checks the daemon's binary and, if it can take over,
	// begins the restart by re-exec and returns at once; on error nothing
	// changes. Like Stop, it must not wait for Server.Close.
	Upgrade() error
	// Metrics returns the daemon's metrics in the Prometheus text format.
	Metrics() (string, error)
}

// refuseTimeout bounds the write of a refusal, which the accepting
// goroutine makes itself: a fresh connection always has room for it.
const refuseTimeout = 100 * time.Millisecond

// warnEvery is the least time between two warnings of one kind.
const warnEvery = 10 * time.Second

// Server serves the control protocol on a listener, passing requests to a
// Handler. Create it with NewServer, run it with Serve, stop it with Close.
type Server struct {
	h   Handler
	log *slog.Logger

	// Limits; tests shorten them through export_test.go.
	timeout    time.Duration
	maxClients int

	allowed []uint32 // the uids that may use the socket, besides root

	mu       sync.Mutex
	ln       *net.UnixListener
	serving  bool
	closed   bool
	closing  chan struct{}              // closed by Close
	reading  map[*net.UnixConn]struct{} // clients still sending their request
	active   int                        // clients being served
	wg       sync.WaitGroup             // Serve's loop and every client's goroutine
	refusals rateLimit
	failures rateLimit
	denials  rateLimit
}

// NewServer returns a Server that answers requests with h and logs to log
// (nil discards). Only root and the process's own uid may use it until
// Allow adds others: a socket's file mode is not enough, since an abstract
// socket has none and a passed one may have any.
func NewServer(h Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		h:          h,
		log:        log,
		allowed:    []uint32{uint32(os.Geteuid())},
		timeout:    RequestTimeout,
		maxClients: MaxClients,
		closing:    make(chan struct{}),
		reading:    make(map[*net.UnixConn]struct{}),
	}
}

// Serve accepts and serves control clients on ln until Close, then returns
// nil; it returns an error only if accepting fails for good. Serve takes
// ownership of ln and closes it when it returns (a listener made by
// net.ListenUnix then removes its socket file; call SetUnlinkOnClose(false)
// to keep it). Serve may be called once.
func (s *Server) Serve(ln *net.UnixListener) error {
	s.mu.Lock()
	if s.closed || s.serving {
		s.mu.Unlock()
		ln.Close()
		if s.closed {
			return nil
		}
		return errors.New("control: Serve called twice")
	}
	s.serving = true
	s.ln = ln
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer ln.Close()

	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			if !temporary(err) {
				s.log.Error("control: accept failed", "err", err)
				return err
			}
			// Out of descriptors or memory: wait rather than spin.
			if n, ok := s.failures.allow(); ok {
				s.log.Warn("control: accept failed; retrying", "err", err, "failures", n)
			}
			select {
			case <-s.closing:
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		s.admit(c)
	}
}

// Close stops accepting (closing the listener) and waits until every
// request in progress has been answered and Serve has returned. Clients
// still sending a request are answered at once with an error. Close is
// safe to call more than once, and before Serve.
func (s *Server) Close() error {
	var err error
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
		if s.ln != nil {
			if err = s.ln.Close(); errors.Is(err, net.ErrClosed) {
				err = nil // Serve closed it already
			}
		}
		// Wake the clients blocked in a read of their request; they see a
		// timeout and are told the server is going away.
		for c := range s.reading {
			c.SetReadDeadline(time.Unix(1, 0))
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Allow lets the users with these uids use the control socket too. It
// must be called before Serve.
func (s *Server) Allow(uids ...uint32) {
	s.allowed = append(s.allowed, uids...)
}

// permitted reports whether the peer of c may send requests, and its
// credentials.
func (s *Server) permitted(c *net.UnixConn) (*unix.Ucred, bool) {
	cred := peerCred(c)
	if cred == nil {
		return nil, false
	}
	return cred, cred.Uid == 0 || slices.Contains(s.allowed, cred.Uid)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// admit starts serving c, or refuses it when the server is full.
func (s *Server) admit(c *net.UnixConn) {
	// The deadline is set before c is registered, so that Close's earlier
	// deadline cannot be overwritten.
	c.SetDeadline(time.Now().Add(s.timeout))
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		c.Close()
		return
	case s.active >= s.maxClients:
		s.mu.Unlock()
		s.refuse(c)
		return
	}
	s.active++
	s.reading[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(c)
}

// refuse answers c with a "busy" error and closes it, without reading.
func (s *Server) refuse(c *net.UnixConn) {
	c.SetWriteDeadline(time.Now().Add(refuseTimeout))
	writeReply(c, errorReply(fmt.Sprintf("busy: %d control requests in progress; try again", s.maxClients)))
	c.Close()
	if n, ok := s.refusals.allow(); ok {
		s.log.Warn("control: client refused, too many requests in progress", "max", s.maxClients, "refused", n)
	}
}

// deny answers c, whose peer may not use the socket, and closes it without
// reading its request.
func (s *Server) deny(c *net.UnixConn, cred *unix.Ucred) {
	msg := "permission denied: the peer's credentials are unknown"
	args := []any{}
	if cred != nil {
		msg = fmt.Sprintf("permission denied: uid %d may not use the control socket", cred.Uid)
		args = append(args, "peer_pid", cred.Pid, "peer_uid", cred.Uid, "peer_gid", cred.Gid)
	}
	c.SetWriteDeadline(time.Now().Add(refuseTimeout))
	writeReply(c, errorReply(msg))
	// Unread bytes at close would reset the connection and could lose
	// the reply: take what the peer sent, for a moment, unanswered.
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(refuseTimeout))
	io.Copy(io.Discard, io.LimitReader(c, MaxRequestSize))
	c.Close()
	if n, ok := s.denials.allow(); ok {
		s.log.Warn("control: request denied: the peer's uid is not allowed", append(args, "denied", n)...)
	}
}

// serveConn reads c's request, answers it and closes c.
func (s *Server) serveConn(c *net.UnixConn) {
	defer s.wg.Done()
	if cred, ok := s.permitted(c); !ok {
		s.deny(c, cred)
		s.mu.Lock()
		delete(s.reading, c)
		s.active--
		s.mu.Unlock()
		return
	}
	line, err := s.readRequest(c)
	s.mu.Lock()
	delete(s.reading, c)
	closed := s.closed
	s.mu.Unlock()

	var rep reply
	var after func()
	switch {
	case err == nil:
		rep, after = s.handle(c, line)
	case closed && errors.Is(err, os.ErrDeadlineExceeded):
		rep = errorReply("the control server is shutting down")
	case errors.Is(err, os.ErrDeadlineExceeded):
		rep = errorReply(fmt.Sprintf("no complete request within %v", s.timeout))
	default:
		s.log.Debug("control: cannot read request", "err", err)
		rep = errorReply(err.Error())
	}
	c.SetWriteDeadline(time.Now().Add(s.timeout))
	if err := writeReply(c, rep); err != nil {
		s.log.Debug("control: cannot send reply", "err", err)
	}
	c.Close()
	if after != nil {
		after()
	}
	s.mu.Lock()
	s.active--
	s.mu.Unlock()
}

var (
	errEmpty    = errors.New("empty request")
	errTooLarge = fmt.Errorf("request larger than %d bytes", MaxRequestSize)
)

// readRequest reads up to the first newline, or to the end of the stream,
// and returns the line without its newline.
func (s *Server) readRequest(c *net.UnixConn) ([]byte, error) {
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), MaxRequestSize+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		if i := bytes.IndexByte(buf[len(buf):len(buf)+n], '\n'); i >= 0 {
			return buf[:len(buf)+i], nil
		}
		buf = buf[:len(buf)+n]
		switch {
		case len(buf) > MaxRequestSize:
			return nil, errTooLarge
		case err == io.EOF && len(buf) == 0:
			return nil, errEmpty
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return nil, err
		}
	}
}

// handle decodes and carries out one request. It returns the reply and,
// for "stop", the work to do once the reply is sent.
func (s *Server) handle(c *net.UnixConn, line []byte) (rep reply, after func()) {
	req, err := decodeRequest(line)
	if err != nil {
		return errorReply(err.Error()), nil
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("control: handler panicked", "command", req.Command, "panic", p)
			rep, after = errorReply("internal error"), nil
		}
	}()

	switch req.Command {
	case "":
		return errorReply("malformed request: no command"), nil
	case CmdStatus:
		s.debug(c, req.Command)
		return okReply(s.h.Status()), nil
	case CmdList:
		s.debug(c, req.Command)
		ws, err := s.h.List()
		if err != nil {
			return errorReply(err.Error()), nil
		}
		if ws == nil {
			ws = []Waiter{} // [] rather than null
		}
		return okReply(ws), nil
	case CmdDrop:
		if err := libspbroker.CheckKey(req.Key); err != nil {
			return errorReply(err.Error()), nil
		}
		n, err := s.h.Drop(req.Key)
		if err != nil {
			return errorReply(err.Error()), nil
		}
		s.audit(c, "control: dropped waiting clients", "key", logsafe.Key(req.Key), "dropped", n)
		return okReply(DropResult{Dropped: n}), nil
	case CmdLogLevel:
		if req.Level == "" {
			s.debug(c, req.Command)
		} else {
			if err := s.h.SetLogLevel(req.Level); err != nil {
				return errorReply(err.Error()), nil
			}
			s.audit(c, "control: log level set", "level", req.Level)
		}
		return okReply(LevelResult{Level: s.h.Status().LogLevel}), nil
	case CmdReload:
		s.audit(c, "control: reload requested")
		summary, err := s.h.Reload()
		if err != nil {
			return errorReply(err.Error()), nil
		}
		return okReply(ReloadResult{Policy: summary}), nil
	case CmdUpgrade:
		s.audit(c, "control: upgrade requested")
		if err := s.h.Upgrade(); err != nil {
			return errorReply(err.Error()), nil
		}
		return okReply(UpgradeResult{Upgrading: true}), nil
	case CmdMetrics:
		s.debug(c, req.Command)
		text, err := s.h.Metrics()
		if err != nil {
			return errorReply(err.Error()), nil
		}
		return okReply(MetricsResult{Text: text}), nil
	case CmdStop:
		s.audit(c, "control: stop requested")
		return okReply(StopResult{Stopping: true}), s.h.Stop
	}
	return errorReply(fmt.Sprintf("unknown command %q", req.Command)), nil
}

// decodeRequest decodes one request line strictly: one JSON object, no
// field twice, none unknown, and only the fields its command takes.
func decodeRequest(line []byte) (Request, error) {
	var req Request
	if err := checkFields(line); err != nil {
		return req, fmt.Errorf("malformed request: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("malformed request: %w", err)
	}
	if len(bytes.TrimSpace(line[dec.InputOffset():])) > 0 {
		return req, errors.New("malformed request: data after the JSON object")
	}
	if req.Key != nil && req.Command != CmdDrop {
		return req, fmt.Errorf("%q takes no key", req.Command)
	}
	if req.Level != "" && req.Command != CmdLogLevel {
		return req, fmt.Errorf("%q takes no level", req.Command)
	}
	return req, nil
}

// requestFields are the names of Request's fields, exactly.
var requestFields = []string{"command", "key", "level"}

// checkFields fails if the JSON object in line names a field twice, or
// names one in any spelling but Request's own. encoding/json keeps the
// last of two and matches names regardless of case, so that
// {"command":"status","Command":"stop"} would pass a check of the first
// and stop the daemon. Anything that is not an object is left to the
// decoder's error.
func checkFields(line []byte) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		k, ok := t.(string)
		if !ok {
			return nil
		}
		switch {
		case !slices.Contains(requestFields, k):
			return fmt.Errorf("json: unknown field %q", k)
		case seen[k]:
			return fmt.Errorf("field %q given twice", k)
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// debug logs a read-only request at debug level.
func (s *Server) debug(c *net.UnixConn, command string) {
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("control request", append([]any{"command", command}, peerAttrs(c)...)...)
	}
}

// audit logs a request that changed something, with who asked.
func (s *Server) audit(c *net.UnixConn, msg string, args ...any) {
	s.log.Info(msg, append(args, peerAttrs(c)...)...)
}

// peerCred returns the credentials of c's peer, or nil if the kernel
// would not say.
func peerCred(c *net.UnixConn) *unix.Ucred {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	rc.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return cred
}

// peerAttrs returns the peer's pid, uid and gid as log attributes, or
// nothing if the kernel would not say.
func peerAttrs(c *net.UnixConn) []any {
	cred := peerCred(c)
	if cred == nil {
		return nil
	}
	return []any{"peer_pid", cred.Pid, "peer_uid", cred.Uid, "peer_gid", cred.Gid}
}

func okReply(result any) reply    { return reply{OK: true, Result: result} }
func errorReply(msg string) reply { return reply{Error: msg} }

// writeReply sends rep as one JSON line.
func writeReply(c *net.UnixConn, rep reply) error {
	b, err := json.Marshal(rep)
	if err != nil {
		b, _ = json.Marshal(errorReply("internal error: " + err.Error()))
	}
	_, err = c.Write(append(b, '\n'))
	return err
}

// temporary reports whether an accept error may go away by itself.
func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// rateLimit lets an event through at most once per warnEvery and counts
// the events since the last one let through.
type rateLimit struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

// allow counts an event and reports whether to log it, with the number of
// events it stands for.
func (r *rateLimit) allow() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if now := time.Now(); r.last.IsZero() || now.Sub(r.last) >= warnEvery {
		n := r.n
		r.last, r.n = now, 0
		return n, true
	}
	return 0, false
}
