package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/one-socket/one-socket/internal/policy"
	"github.com/one-socket/one-socket/libspbroker"
)

// FuzzParse checks that Parse never panics, that its errors are
// ParseErrors naming the file, and that a policy it accepts decides the
// same way after a round trip through Format. Seeds are in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		p, err := policy.Parse("fuzz.conf", strings.NewReader(text))
		if err != nil {
			var pe *policy.ParseError
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "fuzz.conf:") || pe.Line < 1 {
				t.Fatalf("error %q is not a ParseError for fuzz.conf", err)
			}
			return
		}
		canon := p.Format()
		again, err := policy.Parse("fuzz.conf", strings.NewReader(canon))
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", canon, err)
		}
		if got := again.Format(); got != canon {
			t.Fatalf("canonical form not stable:\n%q\n%q", canon, got)
		}
		// Rule n of the original is rule n of the canonical form, on line n.
		index := map[int]int{0: 0}
		for i, line := range p.RuleLines() {
			index[line] = i + 1
		}
		for _, c := range fuzzCreds {
			for _, key := range fuzzKeys(text) {
				for m := libspbroker.ModeNone; m <= libspbroker.ModeMax; m++ {
					d, d2 := p.Allow(c, key, m), again.Allow(c, key, m)
					i, ok := index[d.Rule]
					if !ok || d.Allowed != d2.Allowed || i != d2.Rule || d.Reason == "" {
						t.Fatalf("cred %+v key %q mode %v: %+v, after Format %+v", c, key, m, d, d2)
					}
					if d.Allowed && d.Rule == 0 {
						t.Fatalf("allowed by default: %+v", d)
					}
				}
			}
		}
	})
}

var fuzzCreds = []policy.Cred{
	{UID: 0, GID: 0}, {UID: 107, GID: 107}, {UID: 1000, GID: 990}, {UID: 1<<32 - 2, GID: 1<<32 - 1},
}

// fuzzKeys derives keys from the input, so that keys the rules mention
// get tried: every field's value after "=" and after its "hex:" or
// "prefix:", plus fixed and edge-case keys.
func fuzzKeys(text string) [][]byte {
	keys := [][]byte{nil, []byte("vm-1"), []byte("\x00\xff"), make([]byte, libspbroker.MaxKeyLength+1), []byte(text)}
	for f := range strings.FieldsSeq(text) {
		_, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		keys = append(keys, []byte(v), []byte(strings.TrimPrefix(strings.TrimPrefix(v, "prefix:"), "hex:")))
		if len(keys) > 16 {
			break
		}
	}
	return keys
}
