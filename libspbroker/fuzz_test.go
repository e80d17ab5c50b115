package libspbroker_test

import (
	"errors"
	"testing"

	spb "github.com/one-socket/one-socket/libspbroker"
)

// FuzzDecodeValidate feeds arbitrary bytes and descriptor counts through
// Decode and Validate: they must never panic, must fail only with protocol
// errors, and a valid GET_PAIR must survive re-encoding unchanged. The seed
// corpus is in testdata/fuzz/FuzzDecodeValidate.
func FuzzDecodeValidate(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, nfds int) {
		var m spb.Message
		if err := m.Decode(data); err != nil {
			if !errors.Is(err, spb.ErrLength) {
				t.Fatalf("Decode(%d bytes): %v", len(data), err)
			}
			return
		}
		err := spb.Validate(&m, nfds)
		if err != nil {
			var pe *spb.ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, spb.ErrProtocol) {
				t.Fatalf("Validate: not a protocol error: %v", err)
			}
			_ = err.Error()
			return
		}
		if m.Request != spb.RequestGetPair {
			return
		}
		b := m.AppendEncode(nil)
		if len(b) != spb.MessageSize {
			t.Fatalf("encoded %d bytes", len(b))
		}
		var again spb.Message
		if err := again.Decode(b); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.Request != m.Request || again.Flags != m.Flags || again.Size != m.Size ||
			again.Mode != m.Mode || again.KeyLen != m.KeyLen || string(again.PairKey()) != string(m.PairKey()) ||
			again.Key != m.Key {
			t.Fatalf("re-encoding changed the message:\n got %+v\nwant %+v", again, m)
		}
		if err := spb.Validate(&again, nfds, spb.RequestGetPair); err != nil {
			t.Fatalf("re-encoded message invalid: %v", err)
		}
	})
}
