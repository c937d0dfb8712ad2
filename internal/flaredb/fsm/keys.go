package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Pebble key layout. The first byte names the keyspace:
//
//	'c' + member ID                        -> member record (API address)
//	'e' + BE64(expiresAt ms) + raw key     -> expiry index entry (mod revision)
//	'l' + BE64(revision)                   -> log entry: every event of that revision
//	'm' + name                             -> meta records
//	's' + raw key                          -> state: current value and revisions
//	'v' + esc(raw key) + BE64(revision)    -> version of the key written at revision
//
// esc escapes 0x00 as 0x00 0xFF and ends the key with 0x00 0x01, so versions
// sort by key then revision and no key's versions interleave with another's.
// Raw keys are namespace prefix + user key (see wire.RawKey).
const (
	prefixMember  byte = 'c'
	prefixExpiry  byte = 'e'
	prefixLog     byte = 'l'
	prefixMeta    byte = 'm'
	prefixState   byte = 's'
	prefixVersion byte = 'v'
)

var (
	metaStateKey     = []byte("m/state")
	metaRestoringKey = []byte("m/restoring")

	logLower     = []byte{prefixLog}
	stateLower   = []byte{prefixState}
	stateUpper   = []byte{prefixState + 1}
	memberLower  = []byte{prefixMember}
	memberUpper  = []byte{prefixMember + 1}
	expiryLower  = []byte{prefixExpiry}
	expiryUpper  = []byte{prefixExpiry + 1}
	versionLower = []byte{prefixVersion}
	versionUpper = []byte{prefixVersion + 1}

	// allLower/allUpper span every keyspace.
	allLower = []byte{0}
	allUpper = []byte{0xff}
)

// errCorrupt marks a stored record or key that cannot be decoded.
var errCorrupt = errors.New("flaredb: corrupt fsm record")

func stateKey(raw []byte) []byte {
	k := make([]byte, 1+len(raw))
	k[0] = prefixState
	copy(k[1:], raw)
	return k
}

func logKey(rev int64) []byte {
	k := make([]byte, 9)
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], uint64(rev))
	return k
}

func revFromLogKey(k []byte) (int64, error) {
	if len(k) != 9 || k[0] != prefixLog {
		return 0, fmt.Errorf("%w: malformed log key %x", errCorrupt, k)
	}
	v := binary.BigEndian.Uint64(k[1:])
	if v == 0 || v > math.MaxInt64 {
		return 0, fmt.Errorf("%w: log key revision %d", errCorrupt, v)
	}
	return int64(v), nil
}

func memberKey(id string) []byte { return append([]byte{prefixMember}, id...) }

func expiryKey(at int64, raw []byte) []byte {
	k := make([]byte, 9, 9+len(raw))
	k[0] = prefixExpiry
	binary.BigEndian.PutUint64(k[1:], uint64(at))
	return append(k, raw...)
}

// versionPrefix is 'v' + esc(raw): every version of raw starts with it.
func versionPrefix(raw []byte) []byte {
	p := make([]byte, 1, len(raw)+4+8)
	p[0] = prefixVersion
	for _, c := range raw {
		if c == 0 {
			p = append(p, 0, 0xff)
		} else {
			p = append(p, c)
		}
	}
	return append(p, 0, 1)
}

func versionKey(raw []byte, rev int64) []byte {
	return binary.BigEndian.AppendUint64(versionPrefix(raw), uint64(rev))
}

// versionKeyAfter is the smallest version key of any raw key after raw.
func versionKeyAfter(raw []byte) []byte {
	p := versionPrefix(raw)
	p[len(p)-1] = 2
	return p
}

// parseVersionKey splits a version key into the raw key and revision.
func parseVersionKey(k []byte) (raw []byte, rev int64, err error) {
	if len(k) < 1+2+8 || k[0] != prefixVersion {
		return nil, 0, fmt.Errorf("%w: version key %x", errCorrupt, k)
	}
	body, revb := k[1:len(k)-8], k[len(k)-8:]
	if !bytes.HasSuffix(body, []byte{0, 1}) {
		return nil, 0, fmt.Errorf("%w: version key %x not terminated", errCorrupt, k)
	}
	body = body[:len(body)-2]
	raw = make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == 0 {
			if i+1 >= len(body) || body[i+1] != 0xff {
				return nil, 0, fmt.Errorf("%w: version key %x badly escaped", errCorrupt, k)
			}
			i++
		}
		raw = append(raw, c)
	}
	v := binary.BigEndian.Uint64(revb)
	if v == 0 || v > math.MaxInt64 {
		return nil, 0, fmt.Errorf("%w: version key revision %d", errCorrupt, v)
	}
	return raw, int64(v), nil
}

// Records. Each starts with a format byte; decoders reject unknown formats
// and never panic on malformed input.
const formatV1 byte = 1

// stateRecord is the current value of a key.
type stateRecord struct {
	value   []byte
	create  int64
	mod     int64
	expires int64 // unix ms, 0: none
}

func (r *stateRecord) kv(raw []byte) wire.KV {
	return wire.KV{Key: raw, Value: r.value, CreateRevision: r.create, ModRevision: r.mod, ExpiresAt: r.expires}
}

func appendState(dst []byte, r *stateRecord) []byte {
	dst = append(dst, formatV1)
	dst = binary.AppendUvarint(dst, uint64(r.create))
	dst = binary.AppendUvarint(dst, uint64(r.mod))
	dst = binary.AppendUvarint(dst, uint64(r.expires))
	return append(dst, r.value...)
}

// decodeState decodes a state record; the value aliases b.
func decodeState(b []byte) (stateRecord, error) {
	r := reader{b: b}
	r.format("state")
	s := stateRecord{create: r.rev("create"), mod: r.rev("mod"), expires: r.rev("expires")}
	s.value = r.rest()
	if r.err == nil && (s.create < 1 || s.mod < s.create) {
		r.err = fmt.Errorf("%w: state revisions create=%d mod=%d", errCorrupt, s.create, s.mod)
	}
	return s, r.err
}

// versionRecord is one version of a key: a put or a tombstone.
type versionRecord struct {
	tombstone bool
	create    int64
	expires   int64
	value     []byte
}

func appendVersion(dst []byte, v *versionRecord) []byte {
	dst = append(dst, formatV1)
	if v.tombstone {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(v.create))
	dst = binary.AppendUvarint(dst, uint64(v.expires))
	return append(dst, v.value...)
}

func decodeVersion(b []byte) (versionRecord, error) {
	r := reader{b: b}
	r.format("version")
	kind := r.byte("version kind")
	v := versionRecord{tombstone: kind == 1, create: r.rev("create"), expires: r.rev("expires")}
	v.value = r.rest()
	if r.err == nil && kind > 1 {
		r.err = fmt.Errorf("%w: version kind %d", errCorrupt, kind)
	}
	return v, r.err
}

// logEvent is one change in a log entry. For a delete, value, create and
// expires are those the key had just before.
type logEvent struct {
	typ     wire.EventType
	key     []byte
	value   []byte
	create  int64
	expires int64
}

// LogEntry is every change made at one revision, sorted by key (events on
// the same key keep their op order). Keys are raw keys.
type LogEntry struct {
	Rev    int64
	events []logEvent
}

// Events returns the entry's events under rawPrefix as wire events (keys
// still raw). They alias the entry.
func (e *LogEntry) Events(rawPrefix []byte) []wire.Event {
	var out []wire.Event
	for _, ev := range e.events {
		if !bytes.HasPrefix(ev.key, rawPrefix) {
			continue
		}
		out = append(out, wire.Event{Type: ev.typ, KV: wire.KV{
			Key: ev.key, Value: ev.value, CreateRevision: ev.create, ModRevision: e.Rev, ExpiresAt: ev.expires,
		}})
	}
	return out
}

func appendLogEntry(dst []byte, e *LogEntry) []byte {
	dst = append(dst, formatV1)
	dst = binary.AppendUvarint(dst, uint64(e.Rev))
	dst = binary.AppendUvarint(dst, uint64(len(e.events)))
	for _, ev := range e.events {
		dst = append(dst, byte(ev.typ))
		dst = binary.AppendUvarint(dst, uint64(len(ev.key)))
		dst = append(dst, ev.key...)
		dst = binary.AppendUvarint(dst, uint64(len(ev.value)))
		dst = append(dst, ev.value...)
		dst = binary.AppendUvarint(dst, uint64(ev.create))
		dst = binary.AppendUvarint(dst, uint64(ev.expires))
	}
	return dst
}

const minLogEventSize = 6

func decodeLogEntry(b []byte) (LogEntry, error) {
	r := reader{b: b}
	r.format("log")
	e := LogEntry{Rev: r.rev("log revision")}
	n := r.uvarint("log event count")
	if r.err == nil && (e.Rev < 1 || n == 0 || n > uint64(len(r.b)/minLogEventSize)) {
		return LogEntry{}, fmt.Errorf("%w: log entry revision %d with %d events in %d bytes", errCorrupt, e.Rev, n, len(r.b))
	}
	if r.err != nil {
		return LogEntry{}, r.err
	}
	e.events = make([]logEvent, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		t := r.byte("event type")
		ev := logEvent{typ: wire.EventType(t), key: r.bytes("event key"), value: r.bytes("event value"),
			create: r.rev("event create"), expires: r.rev("event expires")}
		if r.err == nil && (t > byte(wire.EventDelete) || len(ev.key) == 0 || ev.create < 1 || ev.create > e.Rev) {
			r.err = fmt.Errorf("%w: log %d event %d", errCorrupt, e.Rev, i)
		}
		e.events = append(e.events, ev)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes in log entry %d", errCorrupt, len(r.b), e.Rev)
	}
	return e, r.err
}

// metaState is the FSM's progress, written with every applied batch.
type metaState struct {
	appliedIndex uint64
	appliedTerm  uint64
	rev          int64
	compacted    int64
	// clock is the highest leader timestamp (unix ms) applied so far; TTL
	// expiry is computed from command timestamps, never local clocks.
	clock int64
}

func appendMeta(dst []byte, m *metaState) []byte {
	dst = append(dst, formatV1)
	dst = binary.AppendUvarint(dst, m.appliedIndex)
	dst = binary.AppendUvarint(dst, m.appliedTerm)
	dst = binary.AppendUvarint(dst, uint64(m.rev))
	dst = binary.AppendUvarint(dst, uint64(m.compacted))
	return binary.AppendUvarint(dst, uint64(m.clock))
}

func decodeMeta(b []byte) (metaState, error) {
	r := reader{b: b}
	r.format("meta")
	m := metaState{appliedIndex: r.uvarint("applied index"), appliedTerm: r.uvarint("applied term"),
		rev: r.rev("revision"), compacted: r.rev("compacted"), clock: r.rev("clock")}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: trailing bytes in meta", errCorrupt)
	}
	if r.err == nil && (m.compacted > m.rev) {
		r.err = fmt.Errorf("%w: meta revision %d compacted %d", errCorrupt, m.rev, m.compacted)
	}
	return m, r.err
}

// reader decodes records; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) format(what string) {
	if len(r.b) == 0 || r.b[0] != formatV1 {
		r.err = fmt.Errorf("%w: %s record format", errCorrupt, what)
		return
	}
	r.b = r.b[1:]
}

func (r *reader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("%w: %s truncated", errCorrupt, what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: %s: bad varint", errCorrupt, what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) rev(what string) int64 {
	v := r.uvarint(what)
	if v > math.MaxInt64 {
		r.err = fmt.Errorf("%w: %s overflows", errCorrupt, what)
		return 0
	}
	return int64(v)
}

func (r *reader) bytes(what string) []byte {
	l := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if l > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: %s length %d exceeds %d", errCorrupt, what, l, len(r.b))
		return nil
	}
	v := r.b[:l:l]
	r.b = r.b[l:]
	return v
}

func (r *reader) rest() []byte {
	if r.err != nil {
		return nil
	}
	v := r.b[:len(r.b):len(r.b)]
	r.b = nil
	return v
}
