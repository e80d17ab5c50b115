// Package logsafe turns bytes that clients choose (their keys) into text
// for a log line that no choice of bytes can bend: not split into two
// lines, not made to look like another field, not given a meaning by a
// shell that a line is pasted into.
package logsafe

// MaxKey is how much of a key a log line shows.
const MaxKey = 64

// Key returns key for a log: printable ASCII as it is, but for the
// characters that quote, expand or separate in a log reader or a shell,
// which become \xNN like every other byte; cut to MaxKey bytes, with
// "..." after a cut. The result never holds a space, '=' or a quote, so a
// key=value logger writes it unquoted and unambiguous.
func Key(key []byte) string {
	cut := key
	if len(cut) > MaxKey {
		cut = cut[:MaxKey]
	}
	const digits = "0123456789abcdef"
	b := make([]byte, 0, len(cut)+8)
	for _, c := range cut {
		if c > ' ' && c < 0x7f && !special(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '\\', 'x', digits[c>>4], digits[c&15])
	}
	if len(key) > MaxKey {
		b = append(b, "..."...)
	}
	if len(b) == 0 {
		return `\x` // an empty key, which no valid request has
	}
	return string(b)
}

// special reports whether c means something to a log reader or a shell.
func special(c byte) bool {
	switch c {
	case '"', '\'', '`', '\\', '$', '=', ';', '&', '|', '<', '>', '(', ')', '{', '}', '[', ']', '*', '?', '!', '#', '~', '%', '^':
		return true
	}
	return false
}
