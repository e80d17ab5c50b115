package doc_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/one-socket/one-socket/libspbroker"
)

// A line of `hexdump -C`: an offset, up to 16 bytes, the text column.
var dumpLine = regexp.MustCompile(`^([0-9a-f]{8})((?:  ?[0-9a-f]{2}){0,16})\s*(?:\|.*\|)?$`)

// The sentence of the worked example that names its GET_PAIR.
var exampleRequest = regexp.MustCompile("asks for the key `([^`]+)` \\((\\d+) bytes\\)\\s+in\\s+mode\\s+(NONE|CLIENT|SERVER)")

// parseDump turns hexdump -C output back into bytes: a "*" line repeats
// the line before it up to the next offset, and the last line, an offset
// alone, is the total length.
func parseDump(lines []string) ([]byte, error) {
	var out, prev []byte
	repeat := false
	for i, l := range lines {
		if strings.TrimSpace(l) == "*" {
			repeat = true
			continue
		}
		m := dumpLine.FindStringSubmatch(l)
		if m == nil {
			return nil, fmt.Errorf("line %d: not a hexdump -C line: %q", i+1, l)
		}
		off, _ := strconv.ParseUint(m[1], 16, 32)
		if repeat {
			for uint64(len(out)) < off {
				out = append(out, prev...)
			}
			repeat = false
		}
		if uint64(len(out)) != off {
			return nil, fmt.Errorf("line %d: offset %#x, but %#x bytes came before it", i+1, off, len(out))
		}
		var cur []byte
		for _, h := range strings.Fields(m[2]) {
			b, _ := strconv.ParseUint(h, 16, 8)
			cur = append(cur, byte(b))
		}
		out = append(out, cur...)
		prev = cur
	}
	return out, nil
}

// TestProtocolHexDumps checks the worked example of doc/protocol.md: its
// first dump is the GET_PAIR the encoder makes for the key and mode the
// dump holds, its second the encoder's SET_PAIR.
func TestProtocolHexDumps(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the dumps show a little-endian machine, and this one is big-endian")
	}
	const rel = "doc/protocol.md"
	f := readMarkdown(t, repoRoot, rel)
	var dumps []codeBlock
	for _, b := range f.blocks {
		if len(b.lines) > 0 && dumpLine.MatchString(b.lines[0]) {
			dumps = append(dumps, b)
		}
	}
	if len(dumps) != 2 {
		t.Fatalf("%s: found %d hex dumps, want 2 (a GET_PAIR, then a SET_PAIR)", rel, len(dumps))
	}
	got := make([][]byte, 2)
	for i, d := range dumps {
		b, err := parseDump(d.lines)
		if err != nil {
			t.Fatalf("%s:%d: %v", rel, d.first, err)
		}
		got[i] = b
	}

	// The prose says which request the first dump shows; hold it to that.
	said := exampleRequest.FindStringSubmatch(strings.Join(f.lines[:dumps[0].first], "\n"))
	if said == nil {
		t.Fatalf("%s: no sentence before the first dump says \"asks for the key `KEY` (N bytes) in mode MODE\"", rel)
	}
	var m libspbroker.Message
	if err := m.Decode(got[0]); err != nil {
		t.Fatalf("%s:%d: the GET_PAIR dump does not decode: %v", rel, dumps[0].first, err)
	}
	if err := libspbroker.Validate(&m, 0, libspbroker.RequestGetPair); err != nil {
		t.Fatalf("%s:%d: the GET_PAIR dump is not a valid GET_PAIR: %v", rel, dumps[0].first, err)
	}
	if string(m.PairKey()) != said[1] || strconv.Itoa(len(said[1])) != said[2] || strings.ToUpper(m.Mode.String()) != said[3] {
		t.Errorf("%s:%d: the GET_PAIR dump holds key %q (%d bytes) in mode %s, but the text says key %q (%s bytes) in mode %s",
			rel, dumps[0].first, m.PairKey(), len(m.PairKey()), strings.ToUpper(m.Mode.String()), said[1], said[2], said[3])
	}
	want := libspbroker.NewGetPair(m.PairKey(), m.Mode).AppendEncode(nil)
	if !bytes.Equal(got[0], want) {
		t.Errorf("%s:%d: the GET_PAIR dump (key %q, mode %v) is not what the encoder makes:\n%s",
			rel, dumps[0].first, m.PairKey(), m.Mode, firstDifference(got[0], want))
	}
	want = libspbroker.NewSetPair().AppendEncode(nil)
	if !bytes.Equal(got[1], want) {
		t.Errorf("%s:%d: the SET_PAIR dump is not what the encoder makes:\n%s",
			rel, dumps[1].first, firstDifference(got[1], want))
	}
}

// firstDifference describes where two byte strings part.
func firstDifference(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("the dump has %d bytes, the encoder %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("at offset %d (%#x) the dump has %#02x, the encoder %#02x", i, i, got[i], want[i])
		}
	}
	return "no difference"
}

// TestParseDump pins the dump reader on a short dump with a repeat.
func TestParseDump(t *testing.T) {
	b, err := parseDump([]string{
		"00000000  01 02 03 04 05 06 07 08  09 0a 0b 0c 0d 0e 0f 10  |................|",
		"*",
		"00000020  aa bb                                             |..|",
		"00000022",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	want = append(append(want, want...), 0xaa, 0xbb)
	if !bytes.Equal(b, want) {
		t.Errorf("parseDump = % x\nwant % x", b, want)
	}
	if _, err := parseDump([]string{"00000000  01", "00000004"}); err == nil {
		t.Error("a dump whose offsets do not add up was accepted")
	}
}
