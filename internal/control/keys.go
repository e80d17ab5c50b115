package control

import (
	"unicode"
	"unicode/utf8"
)

// KeyText returns key as a string if it is valid UTF-8 made only of
// printable characters (spaces included), and "" otherwise.
func KeyText(key []byte) string {
	if len(key) == 0 || !utf8.Valid(key) {
		return ""
	}
	for _, r := range string(key) {
		if !unicode.IsPrint(r) {
			return ""
		}
	}
	return string(key)
}
