// Command goenc lets the Python tests compare spbroker with the Go package
// libspbroker: it reads one JSON request per line on standard input and
// answers each with one JSON line on standard output.
//
//	{"op":"encode","request":1,"flags":1,"size":1028,"mode":2,"key_len":3,"key":"616263"}
//	  -> {"hex":"..."}  (Message.AppendEncode)
//	{"op":"check","hex":"...","nfds":1,"expected":[2]}
//	  -> Message.Decode, then Validate with nfds and, if given, expected:
//	     {"message":{...}} for a valid message, with "error":{"kind":"size",
//	     "field":"size","value":7,"text":"..."} added for an invalid one, or
//	     the error alone when Decode refuses the length
//	{"op":"default_socket_path"}
//	  -> {"path":"..."} (DefaultSocketPath, in goenc's own environment and
//	     user), or {"error":{"kind":"other","text":"..."}}
//
// It is a test helper, built by the Python test suite; nothing installs it.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	spb "github.com/one-socket/one-socket/libspbroker"
)

type request struct {
	Op       string    `json:"op"`
	Request  uint32    `json:"request"`
	Flags    uint32    `json:"flags"`
	Size     uint32    `json:"size"`
	Mode     uint16    `json:"mode"`
	KeyLen   uint16    `json:"key_len"`
	Key      string    `json:"key"`
	U64      uint64    `json:"u64"`
	Hex      string    `json:"hex"`
	NFDs     int       `json:"nfds"`
	Expected *[]uint32 `json:"expected"`
}

type message struct {
	Request uint32 `json:"request"`
	Flags   uint32 `json:"flags"`
	Size    uint32 `json:"size"`
	Mode    uint16 `json:"mode"`
	KeyLen  uint16 `json:"key_len"`
	Key     string `json:"key"`
	U64     uint64 `json:"u64"`
}

type protoErr struct {
	Kind  string `json:"kind"`
	Field string `json:"field"`
	Value uint64 `json:"value"`
	Text  string `json:"text"`
}

type answer struct {
	Hex     string    `json:"hex,omitempty"`
	Path    string    `json:"path,omitempty"`
	Message *message  `json:"message,omitempty"`
	Error   *protoErr `json:"error,omitempty"`
}

// kinds names each kind of violation as spbroker's ProtocolError.kind does.
var kinds = []struct {
	err  error
	name string
}{
	{spb.ErrVersion, "version"},
	{spb.ErrFlags, "flags"},
	{spb.ErrRequest, "request"},
	{spb.ErrSize, "size"},
	{spb.ErrFDCount, "descriptors"},
	{spb.ErrUnexpected, "unexpected"},
	{spb.ErrMode, "mode"},
	{spb.ErrKeyLength, "key_length"},
	{spb.ErrPayload, "payload"},
	{spb.ErrLength, "length"},
}

func describe(err error) *protoErr {
	var pe *spb.ProtocolError
	if !errors.As(err, &pe) {
		return &protoErr{Kind: "other", Text: err.Error()}
	}
	out := &protoErr{Field: pe.Field, Value: pe.Value, Text: pe.Error()}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			out.Kind = k.name
			break
		}
	}
	return out
}

func serve(req *request) (*answer, error) {
	switch req.Op {
	case "encode":
		key, err := hex.DecodeString(req.Key)
		if err != nil {
			return nil, err
		}
		m := spb.Message{Request: spb.Request(req.Request), Flags: req.Flags, Size: req.Size,
			Mode: spb.Mode(req.Mode), KeyLen: req.KeyLen, U64: req.U64}
		copy(m.Key[:], key)
		return &answer{Hex: hex.EncodeToString(m.AppendEncode(nil))}, nil
	case "check":
		b, err := hex.DecodeString(req.Hex)
		if err != nil {
			return nil, err
		}
		var m spb.Message
		if err := m.Decode(b); err != nil {
			return &answer{Error: describe(err)}, nil
		}
		ans := &answer{Message: &message{Request: uint32(m.Request), Flags: m.Flags, Size: m.Size,
			Mode: uint16(m.Mode), KeyLen: m.KeyLen, Key: hex.EncodeToString(m.PairKey()), U64: m.U64}}
		if req.Expected != nil {
			exp := make([]spb.Request, 0, len(*req.Expected))
			for _, r := range *req.Expected {
				exp = append(exp, spb.Request(r))
			}
			err = spb.Validate(&m, req.NFDs, exp...)
		} else {
			err = spb.Validate(&m, req.NFDs)
		}
		if err != nil {
			ans.Error = describe(err)
		}
		return ans, nil
	case "default_socket_path":
		p, err := spb.DefaultSocketPath()
		if err != nil {
			return &answer{Error: &protoErr{Kind: "other", Text: err.Error()}}, nil
		}
		return &answer{Path: p}, nil
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64*1024), 1024*1024)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "goenc:", err)
			os.Exit(2)
		}
		ans, err := serve(&req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goenc:", err)
			os.Exit(2)
		}
		if err := out.Encode(ans); err != nil {
			fmt.Fprintln(os.Stderr, "goenc:", err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "goenc:", err)
		os.Exit(1)
	}
}
