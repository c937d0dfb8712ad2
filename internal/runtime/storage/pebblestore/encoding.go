package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Pebble key layout. The first byte names the keyspace; the three keyspaces
// never overlap and sort as log < meta < state.
//
//	'l' + 8-byte big-endian revision  -> log entry (every event of that revision)
//	'm' + name                        -> meta record (current, compacted revision)
//	's' + user key                    -> state record (value, createRev, modRev)
const (
	prefixLog   byte = 'l'
	prefixMeta  byte = 'm'
	prefixState byte = 's'
)

var (
	logLower   = []byte{prefixLog}
	logUpper   = []byte{prefixLog + 1}
	metaLower  = []byte{prefixMeta}
	stateUpper = []byte{prefixState + 1}

	metaCurrentKey   = []byte("m/current")
	metaCompactedKey = []byte("m/compacted")
)

func stateKey(key []byte) []byte {
	k := make([]byte, 1+len(key))
	k[0] = prefixState
	copy(k[1:], key)
	return k
}

func logKey(rev int64) []byte {
	k := make([]byte, 9)
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], uint64(rev))
	return k
}

// revFromLogKey parses a key written by logKey.
func revFromLogKey(k []byte) (int64, error) {
	if len(k) != 9 || k[0] != prefixLog {
		return 0, fmt.Errorf("%w: malformed log key %x", errCorrupt, k)
	}
	v := binary.BigEndian.Uint64(k[1:])
	if v == 0 || v > math.MaxInt64 {
		return 0, fmt.Errorf("%w: log key revision %d out of range", errCorrupt, v)
	}
	return int64(v), nil
}

// Record encoding. Every record starts with a format byte so the layout can
// change later without guessing; decoders reject formats they do not know and
// never panic on malformed input.
//
//	state: format=1 | uvarint createRev | uvarint modRev | value (rest)
//	log:   format=1 | uvarint rev | uvarint n | n * event
//	event: type (0 put, 1 delete) | uvarint len | key | uvarint len | value | uvarint createRev
//	meta:  format=1 | uvarint revision
//
// A log event's ModRevision is always the entry's revision. For a delete, the
// value and createRev are those the key had just before the delete.
const formatV1 byte = 1

// errCorrupt marks a record or key that cannot be decoded.
var errCorrupt = errors.New("pebblestore: corrupt record")

// minEventSize is the smallest possible encoded event: type, key length, one
// key byte, value length, createRev.
const minEventSize = 5

// storedValue is the decoded state record of one key.
type storedValue struct {
	value  []byte
	create int64
	mod    int64
}

// logEvent is one change within a log entry.
type logEvent struct {
	typ    storage.EventType
	key    []byte
	value  []byte
	create int64
}

// logEntry is every change made at one revision, sorted by key.
type logEntry struct {
	rev    int64
	events []logEvent
}

func appendValue(dst []byte, v storedValue) []byte {
	dst = append(dst, formatV1)
	dst = binary.AppendUvarint(dst, uint64(v.create))
	dst = binary.AppendUvarint(dst, uint64(v.mod))
	return append(dst, v.value...)
}

// decodeValue decodes a state record. The returned value aliases b.
func decodeValue(b []byte) (storedValue, error) {
	if len(b) == 0 {
		return storedValue{}, fmt.Errorf("%w: empty state record", errCorrupt)
	}
	if b[0] != formatV1 {
		return storedValue{}, fmt.Errorf("%w: unknown state record format %d", errCorrupt, b[0])
	}
	rest := b[1:]
	create, rest, err := readRev(rest)
	if err != nil {
		return storedValue{}, fmt.Errorf("state createRev: %w", err)
	}
	mod, rest, err := readRev(rest)
	if err != nil {
		return storedValue{}, fmt.Errorf("state modRev: %w", err)
	}
	if create < 1 || mod < create {
		return storedValue{}, fmt.Errorf("%w: state revisions create=%d mod=%d", errCorrupt, create, mod)
	}
	return storedValue{value: rest[:len(rest):len(rest)], create: create, mod: mod}, nil
}

func appendLogEntry(dst []byte, e logEntry) []byte {
	dst = append(dst, formatV1)
	dst = binary.AppendUvarint(dst, uint64(e.rev))
	dst = binary.AppendUvarint(dst, uint64(len(e.events)))
	for _, ev := range e.events {
		dst = append(dst, byte(ev.typ))
		dst = binary.AppendUvarint(dst, uint64(len(ev.key)))
		dst = append(dst, ev.key...)
		dst = binary.AppendUvarint(dst, uint64(len(ev.value)))
		dst = append(dst, ev.value...)
		dst = binary.AppendUvarint(dst, uint64(ev.create))
	}
	return dst
}

// decodeLogEntry decodes a log record. Keys and values alias b.
func decodeLogEntry(b []byte) (logEntry, error) {
	if len(b) == 0 {
		return logEntry{}, fmt.Errorf("%w: empty log record", errCorrupt)
	}
	if b[0] != formatV1 {
		return logEntry{}, fmt.Errorf("%w: unknown log record format %d", errCorrupt, b[0])
	}
	rest := b[1:]
	rev, rest, err := readRev(rest)
	if err != nil {
		return logEntry{}, fmt.Errorf("log revision: %w", err)
	}
	if rev < 1 {
		return logEntry{}, fmt.Errorf("%w: log revision %d", errCorrupt, rev)
	}
	n, rest, err := readUvarint(rest)
	if err != nil {
		return logEntry{}, fmt.Errorf("log event count: %w", err)
	}
	// Bound the count by the bytes left so corrupt input cannot make us
	// allocate more than the input justifies.
	if n == 0 || n > uint64(len(rest)/minEventSize) {
		return logEntry{}, fmt.Errorf("%w: log event count %d with %d bytes left", errCorrupt, n, len(rest))
	}
	e := logEntry{rev: rev, events: make([]logEvent, 0, n)}
	for i := uint64(0); i < n; i++ {
		if len(rest) == 0 {
			return logEntry{}, fmt.Errorf("%w: log event %d truncated", errCorrupt, i)
		}
		var ev logEvent
		switch t := storage.EventType(rest[0]); t {
		case storage.EventPut, storage.EventDelete:
			ev.typ = t
		default:
			return logEntry{}, fmt.Errorf("%w: log event %d has unknown type %d", errCorrupt, i, rest[0])
		}
		rest = rest[1:]
		if ev.key, rest, err = readBytes(rest); err != nil {
			return logEntry{}, fmt.Errorf("log event %d key: %w", i, err)
		}
		if len(ev.key) == 0 {
			return logEntry{}, fmt.Errorf("%w: log event %d has an empty key", errCorrupt, i)
		}
		if ev.value, rest, err = readBytes(rest); err != nil {
			return logEntry{}, fmt.Errorf("log event %d value: %w", i, err)
		}
		if ev.create, rest, err = readRev(rest); err != nil {
			return logEntry{}, fmt.Errorf("log event %d createRev: %w", i, err)
		}
		if ev.create < 1 || ev.create > rev {
			return logEntry{}, fmt.Errorf("%w: log event %d createRev %d at revision %d", errCorrupt, i, ev.create, rev)
		}
		e.events = append(e.events, ev)
	}
	if len(rest) != 0 {
		return logEntry{}, fmt.Errorf("%w: %d trailing bytes after log entry", errCorrupt, len(rest))
	}
	return e, nil
}

func encodeMeta(rev int64) []byte {
	return binary.AppendUvarint([]byte{formatV1}, uint64(rev))
}

func decodeMeta(b []byte) (int64, error) {
	if len(b) == 0 || b[0] != formatV1 {
		return 0, fmt.Errorf("%w: bad meta record %x", errCorrupt, b)
	}
	rev, rest, err := readRev(b[1:])
	if err != nil {
		return 0, fmt.Errorf("meta: %w", err)
	}
	if len(rest) != 0 {
		return 0, fmt.Errorf("%w: %d trailing bytes after meta record", errCorrupt, len(rest))
	}
	return rev, nil
}

func readUvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: bad uvarint", errCorrupt)
	}
	return v, b[n:], nil
}

func readRev(b []byte) (int64, []byte, error) {
	v, rest, err := readUvarint(b)
	if err != nil {
		return 0, nil, err
	}
	if v > math.MaxInt64 {
		return 0, nil, fmt.Errorf("%w: revision %d overflows int64", errCorrupt, v)
	}
	return int64(v), rest, nil
}

func readBytes(b []byte) ([]byte, []byte, error) {
	l, rest, err := readUvarint(b)
	if err != nil {
		return nil, nil, err
	}
	if l > uint64(len(rest)) {
		return nil, nil, fmt.Errorf("%w: length %d exceeds %d remaining bytes", errCorrupt, l, len(rest))
	}
	return rest[:l:l], rest[l:], nil
}
