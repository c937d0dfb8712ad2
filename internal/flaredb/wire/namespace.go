package wire

import (
	"bytes"
	"fmt"
	"strings"
)

// Namespaces keep components and projects apart inside one store. A
// namespace is "" (the default) or up to MaxNamespaceSegments segments joined
// by '/', each 1..63 characters of [a-z0-9-] starting and ending with a letter
// or digit: "iam", "prismnet/projects/p-1". Keys, ranges and watches of a
// request all live inside its namespace; revisions are store-wide.
//
// A key k in namespace ns is stored as ns + 0x00 + k. No namespace's encoded
// prefix is a prefix of another's, since segments never contain 0x00.
const (
	MaxNamespaceLen      = 128
	MaxNamespaceSegments = 4
	maxSegmentLen        = 63
)

// ValidateNamespace checks ns against the namespace rules.
func ValidateNamespace(ns string) error {
	if ns == "" {
		return nil
	}
	if len(ns) > MaxNamespaceLen {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrBadNamespace, len(ns), MaxNamespaceLen)
	}
	segs := strings.Split(ns, "/")
	if len(segs) > MaxNamespaceSegments {
		return fmt.Errorf("%w: %q has %d segments (max %d)", ErrBadNamespace, ns, len(segs), MaxNamespaceSegments)
	}
	for _, s := range segs {
		if s == "" || len(s) > maxSegmentLen {
			return fmt.Errorf("%w: %q: segments must be 1..%d characters", ErrBadNamespace, ns, maxSegmentLen)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
			if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
				return fmt.Errorf("%w: %q: use lower-case letters, digits and inner '-'", ErrBadNamespace, ns)
			}
		}
	}
	return nil
}

// NamespacePrefix is the raw-key prefix of every key in ns.
func NamespacePrefix(ns string) []byte {
	p := make([]byte, 0, len(ns)+1)
	p = append(p, ns...)
	return append(p, 0)
}

// RawKey returns ns's prefix followed by key.
func RawKey(ns string, key []byte) []byte {
	k := make([]byte, 0, len(ns)+1+len(key))
	k = append(k, ns...)
	k = append(k, 0)
	return append(k, key...)
}

// RawRange maps a user range [start, end) in ns (end nil: to the end of the
// namespace) to raw keys.
func RawRange(ns string, start, end []byte) (rawStart, rawEnd []byte) {
	rawStart = RawKey(ns, start)
	if end == nil {
		rawEnd = append([]byte(ns), 1)
	} else {
		rawEnd = RawKey(ns, end)
	}
	return rawStart, rawEnd
}

// UserKey strips ns's prefix from a raw key. ok is false if raw is not in ns.
func UserKey(ns string, raw []byte) (key []byte, ok bool) {
	if len(raw) < len(ns)+1 || raw[len(ns)] != 0 || !bytes.Equal(raw[:len(ns)], []byte(ns)) {
		return nil, false
	}
	return raw[len(ns)+1:], true
}
