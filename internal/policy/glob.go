package policy

import (
	"fmt"
	"math/bits"
)

// A key pattern is matched byte by byte, not rune by rune: keys are
// arbitrary bytes, and a pattern must be able to match invalid UTF-8.
// Unlike path.Match, '/' is not special: "vm-*" matches "vm-1/net0".

// byteSet is a set of byte values, one bit each.
type byteSet [4]uint64

func (s *byteSet) add(lo, hi byte) {
	for c := int(lo); c <= int(hi); c++ {
		s[c>>6] |= 1 << (c & 63)
	}
}

func (s *byteSet) has(c byte) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// single returns the set's only member, if it has exactly one.
func (s *byteSet) single() (byte, bool) {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	if n != 1 {
		return 0, false
	}
	for i, w := range s {
		if w != 0 {
			return byte(i<<6 | bits.TrailingZeros64(w)), true
		}
	}
	return 0, false
}

// gtok is one compiled pattern element: a '*', or one byte from a set (a
// literal, '?' or a [class]).
type gtok struct {
	star bool
	set  byteSet
}

// compileGlob compiles a pattern: '*' matches any bytes, '?' any one byte,
// [abc], [a-z] and [^a-z] (or [!a-z]) a byte from a class, '\' makes the
// next byte literal; inside a class ']', '-' and '\' must be escaped.
// Consecutive stars are merged, which keeps matching simple.
func compileGlob(p string) ([]gtok, error) {
	var toks []gtok
	for i := 0; i < len(p); {
		var t gtok
		switch c := p[i]; c {
		case '*':
			i++
			if len(toks) > 0 && toks[len(toks)-1].star {
				continue
			}
			t.star = true
		case '?':
			t.set.add(0, 255)
			i++
		case '[':
			n, err := parseClass(p[i+1:], &t.set)
			if err != nil {
				return nil, err
			}
			i += 1 + n
		case '\\':
			if i+1 == len(p) {
				return nil, fmt.Errorf("trailing \\")
			}
			t.set.add(p[i+1], p[i+1])
			i += 2
		default:
			t.set.add(c, c)
			i++
		}
		toks = append(toks, t)
	}
	return toks, nil
}

// parseClass parses a class after its '[' into set and returns the bytes
// it used, closing ']' included.
func parseClass(p string, set *byteSet) (int, error) {
	i, neg := 0, false
	if i < len(p) && (p[i] == '^' || p[i] == '!') {
		neg, i = true, i+1
	}
	var local byteSet
	for n := 0; ; n++ {
		if i >= len(p) {
			return 0, fmt.Errorf("unterminated [")
		}
		if p[i] == ']' {
			if n == 0 {
				return 0, fmt.Errorf("empty []")
			}
			i++
			break
		}
		lo, k, err := classByte(p[i:])
		if err != nil {
			return 0, err
		}
		i += k
		hi := lo
		if i < len(p) && p[i] == '-' {
			if hi, k, err = classByte(p[i+1:]); err != nil {
				return 0, err
			}
			i += 1 + k
			if hi < lo {
				return 0, fmt.Errorf("reversed range %q-%q in []", lo, hi)
			}
		}
		local.add(lo, hi)
	}
	if neg {
		for w := range local {
			local[w] = ^local[w]
		}
	}
	*set = local
	return i, nil
}

// classByte reads one possibly escaped byte inside a class.
func classByte(p string) (byte, int, error) {
	switch {
	case len(p) == 0:
		return 0, 0, fmt.Errorf("unterminated [")
	case p[0] == '\\':
		if len(p) == 1 {
			return 0, 0, fmt.Errorf("trailing \\")
		}
		return p[1], 2, nil
	case p[0] == '-' || p[0] == ']':
		return 0, 0, fmt.Errorf("unescaped %q in []", p[0])
	}
	return p[0], 1, nil
}

// matchGlob reports whether key matches toks. On a mismatch it resumes at
// the last star with one more byte consumed by it; with merged stars this
// is O(len(toks)*len(key)) at worst and allocation-free.
func matchGlob(toks []gtok, key []byte) bool {
	px, kx := 0, 0
	starPx, starKx := -1, 0
	for px < len(toks) || kx < len(key) {
		if px < len(toks) {
			t := &toks[px]
			if t.star {
				starPx, starKx = px, kx
				px++
				continue
			}
			if kx < len(key) && t.set.has(key[kx]) {
				px++
				kx++
				continue
			}
		}
		if starPx >= 0 && starKx < len(key) {
			starKx++
			px, kx = starPx+1, starKx
			continue
		}
		return false
	}
	return true
}
