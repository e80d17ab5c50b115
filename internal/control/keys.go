package control

import (
	"encoding/hex"
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

// printableKey returns key as text when KeyText allows, else as "0x" and
// its hexadecimal digits, for logs and messages.
func printableKey(key []byte) string {
	if t := KeyText(key); t != "" {
		return t
	}
	return "0x" + hex.EncodeToString(key)
}
