package wire

import (
	"encoding/binary"
	"fmt"
)

// Encoder appends wire fields to a byte slice.
type Encoder struct {
	b []byte
}

// NewEncoder returns an encoder appending to buf (which may be nil).
func NewEncoder(buf []byte) *Encoder { return &Encoder{b: buf} }

// Bytes returns the encoded bytes.
func (e *Encoder) Bytes() []byte { return e.b }

// Byte appends one byte.
func (e *Encoder) Byte(v byte) { e.b = append(e.b, v) }

// Bool appends a boolean as one byte.
func (e *Encoder) Bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

// Uvarint appends an unsigned varint.
func (e *Encoder) Uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }

// Varint appends a zig-zag signed varint.
func (e *Encoder) Varint(v int64) { e.b = binary.AppendVarint(e.b, v) }

// Blob appends a length-prefixed byte string.
func (e *Encoder) Blob(v []byte) {
	e.b = binary.AppendUvarint(e.b, uint64(len(v)))
	e.b = append(e.b, v...)
}

// String appends a length-prefixed string.
func (e *Encoder) String(v string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(v)))
	e.b = append(e.b, v...)
}

// Decoder reads wire fields. The first error sticks: later reads return zero
// values and Err reports the first failure, so callers check once at the end.
type Decoder struct {
	b   []byte
	err error
	tag Tag // set by Header; names the message in errors
}

// NewDecoder returns a decoder over b. Returned byte slices alias b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns the first error, wrapping ErrMalformed or a limit sentinel.
func (d *Decoder) Err() error { return d.err }

// Fail records err (wrapped as malformed unless it already names a sentinel)
// if no error has been recorded yet.
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *Decoder) failf(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

// Remaining is the number of unread bytes.
func (d *Decoder) Remaining() int { return len(d.b) }

// Finish fails if bytes are left over and returns Err, naming the message
// being decoded.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.failf("%d trailing bytes", len(d.b))
	}
	if d.err != nil && d.tag != 0 {
		return fmt.Errorf("decoding %s: %w", d.tag, d.err)
	}
	return d.err
}

// Byte reads one byte.
func (d *Decoder) Byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.failf("%s: unexpected end of input", what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// Bool reads a boolean byte, which must be 0 or 1.
func (d *Decoder) Bool(what string) bool {
	v := d.Byte(what)
	if v > 1 {
		d.failf("%s: boolean byte %d", what, v)
		return false
	}
	return v == 1
}

// Uvarint reads an unsigned varint.
func (d *Decoder) Uvarint(what string) uint64 { return d.uvarint(what, "") }

// uvarint is Uvarint naming the field what+suffix in its error; the two are
// joined only on failure, since this runs for every length and count.
func (d *Decoder) uvarint(what, suffix string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.failf("%s%s: bad varint", what, suffix)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Varint reads a zig-zag signed varint.
func (d *Decoder) Varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.failf("%s: bad varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// NonNegative reads a varint that must be >= 0.
func (d *Decoder) NonNegative(what string) int64 {
	v := d.Varint(what)
	if v < 0 {
		d.failf("%s: negative value %d", what, v)
		return 0
	}
	return v
}

// Blob reads a length-prefixed byte string of at most max bytes. A longer one
// fails with tooLarge (wrapped with the sizes) if it is non-nil, else as
// malformed. The length is checked before anything is allocated.
func (d *Decoder) Blob(what string, max int, tooLarge error) []byte {
	l := d.uvarint(what, " length")
	if d.err != nil {
		return nil
	}
	if l > uint64(max) {
		if tooLarge != nil {
			d.Fail(fmt.Errorf("%s of %d bytes (max %d): %w", what, l, max, tooLarge))
		} else {
			d.failf("%s: length %d exceeds %d", what, l, max)
		}
		return nil
	}
	if l > uint64(len(d.b)) {
		d.failf("%s: length %d exceeds the %d bytes left", what, l, len(d.b))
		return nil
	}
	v := d.b[:l:l]
	d.b = d.b[l:]
	return v
}

// String reads a length-prefixed string of at most max bytes.
func (d *Decoder) String(what string, max int) string {
	return string(d.Blob(what, max, nil))
}

// Count reads a list length that must be at most max and must fit in the
// remaining input at minElem bytes per element, so a forged count cannot make
// the caller allocate more than the input justifies. tooMany, if non-nil, is
// the sentinel for a count above max.
func (d *Decoder) Count(what string, max, minElem int, tooMany error) int {
	n := d.uvarint(what, " count")
	if d.err != nil {
		return 0
	}
	if n > uint64(max) {
		if tooMany != nil {
			d.Fail(fmt.Errorf("%d %s (max %d): %w", n, what, max, tooMany))
		} else {
			d.failf("%s: count %d exceeds %d", what, n, max)
		}
		return 0
	}
	if minElem > 0 && n > uint64(len(d.b)/minElem) {
		d.failf("%s: count %d does not fit in the %d bytes left", what, n, len(d.b))
		return 0
	}
	return int(n)
}

// Header reads and checks the version and message tag.
func (d *Decoder) Header(want Tag) {
	v := d.Byte("version")
	t := Tag(d.Byte("message tag"))
	if d.err != nil {
		return
	}
	if v != Version {
		d.Fail(fmt.Errorf("%w: protocol version %d (this server speaks %d)", ErrVersion, v, Version))
		return
	}
	if t != want {
		d.failf("message tag %d, want %d (%s)", t, want, want)
		return
	}
	d.tag = want
}

// header starts a message of tag t.
func (e *Encoder) header(t Tag) {
	e.b = append(e.b, Version, byte(t))
}

// Batches. A client that has several calls waiting sends them as one POST
// to PathBatch: a BatchRequest is a list of complete encoded GetRequest and
// TxnRequest messages, answered by a BatchResponse holding, in the same
// order, each call's encoded response or Error. The items are independent
// calls that were concurrent at the client, so the member may serve them in
// any order; it proposes a batch's writes together (one log entry) and
// confirms leadership once for its linearizable reads. An error of the
// batch as a whole (not the leader, shutting down, malformed envelope) is
// answered as a plain Error with the usual HTTP status.
const (
	// PathBatch carries a BatchRequest.
	PathBatch = "/flaredb/v1/batch"
	// TagBatchRequest and TagBatchResponse are the envelopes' tags.
	TagBatchRequest  Tag = 30
	TagBatchResponse Tag = 94
	// MaxBatchItems bounds the calls in one batch (and so, with values of
	// at most storage.MaxValueSize, a batch response of point reads).
	MaxBatchItems = 16
)

// EncodeBatch encodes a batch envelope of tag t around items.
func EncodeBatch(t Tag, items [][]byte) []byte {
	size := 2 + binary.MaxVarintLen64
	for _, it := range items {
		size += binary.MaxVarintLen64 + len(it)
	}
	e := NewEncoder(make([]byte, 0, size))
	e.header(t)
	e.Uvarint(uint64(len(items)))
	for _, it := range items {
		e.Blob(it)
	}
	return e.Bytes()
}

// DecodeBatch decodes a batch envelope of tag t: 1 to MaxBatchItems items,
// each aliasing b.
func DecodeBatch(t Tag, b []byte) ([][]byte, error) {
	d := NewDecoder(b)
	d.Header(t)
	n := d.Count("batch items", MaxBatchItems, 1, nil)
	if d.err == nil && n == 0 {
		d.failf("empty batch")
	}
	items := make([][]byte, 0, n)
	for range n {
		items = append(items, d.Blob("batch item", MaxFrameBytes, nil))
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return items, nil
}
