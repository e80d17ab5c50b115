package control_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/one-socket/one-socket/internal/control"
)

// FuzzDecodeRequest feeds the control protocol's decoder anything a client
// could send. It must never panic; what it accepts must be one object with
// no field twice and only the fields its command takes, and must decode
// the same after a round trip.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"command":"status"}`, `{"command":"drop","key":"YQ=="}`, `{"command":"log-level","level":"debug"}`,
		`{"command":"status","command":"stop"}`, `{"command":"drop","key":"YQ==","key":"Yg=="}`,
		`{"command":"stop"} {}`, `[1]`, `null`, `{"command":"list","level":"x"}`, `{"Command":"stop"}`,
		`{"command":"status","Command":"stop"}`, `{"command":"status","comman\u0064":"stop"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := control.DecodeRequest(line)
		if err != nil {
			return
		}
		if req.Key != nil && req.Command != control.CmdDrop {
			t.Fatalf("%q accepted with a key", line)
		}
		if req.Level != "" && req.Command != control.CmdLogLevel {
			t.Fatalf("%q accepted with a level", line)
		}
		// Each field at most once, in its own spelling: a field twice
		// (in any case) leaves fewer distinct names than keys.
		if keys := topLevelKeys(line); keys != nil {
			distinct := map[string]bool{}
			for _, k := range keys {
				if k != "command" && k != "key" && k != "level" {
					t.Fatalf("%q accepted with the field %q", line, k)
				}
				distinct[k] = true
			}
			if len(distinct) != len(keys) {
				t.Fatalf("%q accepted with a field twice", line)
			}
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := control.DecodeRequest(again)
		if err != nil {
			t.Fatalf("%q accepted, but its re-encoding %q is not: %v", line, again, err)
		}
		if back.Command != req.Command || !bytes.Equal(back.Key, req.Key) || back.Level != req.Level {
			t.Fatalf("%q decodes to %+v, its re-encoding to %+v", line, req, back)
		}
	})
}

// topLevelKeys returns the keys of the JSON object in line, or nil.
func topLevelKeys(line []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(line))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	keys := []string{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		k, _ := t.(string)
		keys = append(keys, k)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil
		}
	}
	return keys
}
