package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// MaxReplySize bounds the reply Call reads, in bytes.
const MaxReplySize = 256 << 20

// ServerError is a request the server refused: its reply was
// {"ok":false,"error":Message}.
type ServerError struct {
	Message string
}

func (e *ServerError) Error() string { return "control server: " + e.Message }

// Call sends req to the control server at path ("@name" for an abstract
// socket) and returns the result of its reply. ctx bounds the whole
// exchange. A refusal is a *ServerError carrying the server's message.
// Other errors are *net.OpError values (Op "dial", "write" or "read")
// whose cause errors.Is matches: syscall.ENOENT for a missing socket,
// syscall.ECONNREFUSED when nobody listens, ctx.Err() when ctx ended,
// io.ErrUnexpectedEOF when the server closed without replying.
func Call(ctx context.Context, path string, req Request) (json.RawMessage, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, &net.OpError{Op: "write", Net: "unix", Addr: addr, Err: err}
	}
	if len(line) > MaxRequestSize {
		return nil, &net.OpError{Op: "write", Net: "unix", Addr: addr, Err: errTooLarge}
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// Registered after the deadline above, so that an ended ctx's past
	// deadline is the one that stays.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	_, werr := c.Write(append(line, '\n'))
	if werr == nil {
		c.CloseWrite()
	}
	// Even if the write failed, the server may have answered: it refuses
	// some requests without reading them.
	data, rerr := bufio.NewReader(io.LimitReader(c, MaxReplySize)).ReadBytes('\n')
	if rerr != nil {
		err := rerr
		op := "read"
		switch {
		case ctx.Err() != nil:
			// ctx ended first: whatever the read then met (the deadline
			// ctx set, or a server that hung up meanwhile) follows from it.
			err = ctx.Err()
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			// Only ctx sets deadlines here: it has just expired.
			err = context.DeadlineExceeded
		case werr != nil:
			op, err = "write", werr
			if oe, ok := werr.(*net.OpError); ok {
				err = oe.Err
			}
		case rerr == io.EOF && len(data) < MaxReplySize:
			err = fmt.Errorf("connection closed without a reply: %w", io.ErrUnexpectedEOF)
		case rerr == io.EOF:
			err = fmt.Errorf("reply larger than %d bytes", MaxReplySize)
		default:
			if oe, ok := rerr.(*net.OpError); ok {
				err = oe.Err
			}
		}
		return nil, &net.OpError{Op: op, Net: "unix", Addr: addr, Err: err}
	}
	var rep struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, &net.OpError{Op: "read", Net: "unix", Addr: addr, Err: fmt.Errorf("malformed reply: %w", err)}
	}
	if !rep.OK {
		return nil, &ServerError{Message: rep.Error}
	}
	return rep.Result, nil
}
