package wire

import (
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Field encoders shared by messages (and by flaredb's Raft log commands).

// Txn appends a transaction.
func (e *Encoder) Txn(t *Txn) {
	e.Uvarint(uint64(len(t.If)))
	for _, c := range t.If {
		e.Blob(c.Key)
		e.Byte(byte(c.Target))
		e.Varint(c.Revision)
		if c.Target == CompareRangeEmpty {
			e.Blob(c.RangeEnd)
		} else {
			e.Blob(c.Value)
		}
	}
	for _, ops := range [][]Op{t.Then, t.Else} {
		e.Uvarint(uint64(len(ops)))
		for _, op := range ops {
			e.Byte(byte(op.Type))
			e.Blob(op.Key)
			e.Blob(op.Value)
			e.Varint(op.TTL)
		}
	}
}

// minCompareSize and minOpSize are the smallest encodings of a compare and
// an op (empty key and value), used to bound counts.
const (
	minCompareSize = 4
	minOpSize      = 4
	minKVSize      = 5
	minEventSize   = 6
	minMemberSize  = 4
)

// Txn decodes a transaction whose keys may be up to maxKey bytes and
// validates it (Txn.Validate).
func (d *Decoder) Txn(maxKey int) Txn {
	var t Txn
	n := d.Count("compares", storage.MaxTxnOps, minCompareSize, storage.ErrTooManyOps)
	if n > 0 {
		t.If = make([]Compare, n)
	}
	for i := range n {
		c := &t.If[i]
		c.Key = d.Blob("compare key", maxKey, storage.ErrKeyTooLarge)
		c.Target = CompareTarget(d.Byte("compare target"))
		c.Revision = d.Varint("compare revision")
		if c.Target == CompareRangeEmpty {
			c.RangeEnd = d.Blob("compare range end", maxKey, storage.ErrKeyTooLarge)
		} else {
			c.Value = d.Blob("compare value", storage.MaxValueSize, storage.ErrValueTooLarge)
		}
	}
	t.Then = d.ops("then ops", maxKey)
	t.Else = d.ops("else ops", maxKey)
	if d.err == nil {
		if err := t.Validate(maxKey); err != nil {
			d.Fail(err)
		}
	}
	return t
}

func (d *Decoder) ops(what string, maxKey int) []Op {
	n := d.Count(what, storage.MaxTxnOps, minOpSize, storage.ErrTooManyOps)
	if n == 0 {
		return nil
	}
	ops := make([]Op, n)
	for i := range ops {
		op := &ops[i]
		op.Type = OpType(d.Byte("op type"))
		op.Key = d.Blob("op key", maxKey, storage.ErrKeyTooLarge)
		op.Value = d.Blob("op value", storage.MaxValueSize, storage.ErrValueTooLarge)
		op.TTL = d.Varint("op ttl")
	}
	return ops
}

// KV appends a KV.
func (e *Encoder) KV(kv *KV) {
	e.Blob(kv.Key)
	e.Blob(kv.Value)
	e.Varint(kv.CreateRevision)
	e.Varint(kv.ModRevision)
	e.Varint(kv.ExpiresAt)
}

// KV decodes a KV.
func (d *Decoder) KV() KV {
	return KV{
		Key:            d.Blob("kv key", MaxRawKeySize, nil),
		Value:          d.Blob("kv value", storage.MaxValueSize, nil),
		CreateRevision: d.NonNegative("kv create revision"),
		ModRevision:    d.NonNegative("kv mod revision"),
		ExpiresAt:      d.NonNegative("kv expiry"),
	}
}

func (e *Encoder) member(m *Member) {
	e.String(m.ID)
	e.String(m.RaftAddress)
	e.String(m.APIAddress)
	e.Bool(m.Voter)
}

func (d *Decoder) member() Member {
	return Member{
		ID:          d.String("member id", MaxIDLen),
		RaftAddress: d.String("member raft address", MaxAddrLen),
		APIAddress:  d.String("member api address", MaxAddrLen),
		Voter:       d.Bool("member voter"),
	}
}

func (d *Decoder) namespace() string {
	ns := d.String("namespace", MaxNamespaceLen)
	if d.err == nil {
		if err := ValidateNamespace(ns); err != nil {
			d.Fail(err)
		}
	}
	return ns
}

func (d *Decoder) consistency() Consistency {
	c := Consistency(d.Byte("consistency"))
	if c > Stale {
		d.failf("unknown consistency %d", c)
	}
	return c
}

func (d *Decoder) userKey(what string) []byte {
	k := d.Blob(what, storage.MaxKeySize, storage.ErrKeyTooLarge)
	return k
}

// Requests.

func (m *GetRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagGetRequest)
	e.String(m.Namespace)
	e.Blob(m.Key)
	e.Varint(m.Revision)
	e.Byte(byte(m.Consistency))
	return e.Bytes()
}

func (m *GetRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagGetRequest)
	m.Namespace = d.namespace()
	m.Key = d.userKey("key")
	m.Revision = d.NonNegative("revision")
	m.Consistency = d.consistency()
	if d.err == nil && len(m.Key) == 0 {
		d.Fail(storage.ErrEmptyKey)
	}
	return d.Finish()
}

func (m *RangeRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagRangeRequest)
	e.String(m.Namespace)
	e.Blob(m.Start)
	e.Bool(m.End != nil)
	e.Blob(m.End)
	e.Varint(m.Limit)
	e.Varint(m.Revision)
	e.Bool(m.Reverse)
	e.Byte(byte(m.Consistency))
	return e.Bytes()
}

func (m *RangeRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagRangeRequest)
	m.Namespace = d.namespace()
	m.Start = d.userKey("range start")
	hasEnd := d.Bool("range has end")
	end := d.userKey("range end")
	m.End = nil
	if hasEnd {
		m.End = end
		if m.End == nil {
			m.End = []byte{}
		}
	} else if len(end) != 0 {
		d.failf("range end given without its flag")
	}
	m.Limit = d.Varint("limit")
	m.Revision = d.NonNegative("revision")
	m.Reverse = d.Bool("reverse")
	m.Consistency = d.consistency()
	return d.Finish()
}

func (m *TxnRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagTxnRequest)
	e.String(m.Namespace)
	e.Txn(&m.Txn)
	return e.Bytes()
}

func (m *TxnRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagTxnRequest)
	m.Namespace = d.namespace()
	m.Txn = d.Txn(storage.MaxKeySize)
	return d.Finish()
}

func (m *WatchRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagWatchRequest)
	e.String(m.Namespace)
	e.Blob(m.Prefix)
	e.Varint(m.FromRevision)
	return e.Bytes()
}

func (m *WatchRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagWatchRequest)
	m.Namespace = d.namespace()
	m.Prefix = d.Blob("prefix", storage.MaxKeySize, storage.ErrKeyTooLarge)
	m.FromRevision = d.NonNegative("from revision")
	return d.Finish()
}

func (m *RevisionRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagRevisionRequest)
	e.Byte(byte(m.Consistency))
	return e.Bytes()
}

func (m *RevisionRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagRevisionRequest)
	m.Consistency = d.consistency()
	return d.Finish()
}

func (m *CompactRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagCompactRequest)
	e.Varint(m.Revision)
	return e.Bytes()
}

func (m *CompactRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagCompactRequest)
	m.Revision = d.NonNegative("revision")
	return d.Finish()
}

func (m *MemberAddRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagMemberAddRequest)
	e.member(&m.Member)
	return e.Bytes()
}

func (m *MemberAddRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagMemberAddRequest)
	m.Member = d.member()
	if d.err == nil {
		if err := m.Member.Validate(); err != nil {
			d.Fail(err)
		}
	}
	return d.Finish()
}

func (m *MemberRemoveRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagMemberRemoveRequest)
	e.String(m.ID)
	return e.Bytes()
}

func (m *MemberRemoveRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagMemberRemoveRequest)
	m.ID = d.String("member id", MaxIDLen)
	if d.err == nil && m.ID == "" {
		d.Fail(Errorf(CodeInvalid, "member remove needs an id"))
	}
	return d.Finish()
}

func (m *TransferLeaderRequest) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagTransferLeaderRequest)
	e.String(m.ID)
	return e.Bytes()
}

func (m *TransferLeaderRequest) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagTransferLeaderRequest)
	m.ID = d.String("member id", MaxIDLen)
	return d.Finish()
}

// EncodeEmpty encodes a request that has no fields (read index, status,
// snapshot).
func EncodeEmpty(t Tag) []byte {
	e := NewEncoder(nil)
	e.header(t)
	return e.Bytes()
}

// DecodeEmpty decodes a request of tag t that has no fields.
func DecodeEmpty(t Tag, b []byte) error {
	d := NewDecoder(b)
	d.Header(t)
	return d.Finish()
}

// Responses.

func (m *GetResponse) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagGetResponse)
	e.Bool(m.Found)
	e.KV(&m.KV)
	e.Varint(m.Revision)
	return e.Bytes()
}

func (m *GetResponse) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagGetResponse)
	m.Found = d.Bool("found")
	m.KV = d.KV()
	m.Revision = d.NonNegative("revision")
	return d.Finish()
}

func (m *RangeResponse) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagRangeResponse)
	e.Uvarint(uint64(len(m.KVs)))
	for i := range m.KVs {
		e.KV(&m.KVs[i])
	}
	e.Varint(m.Revision)
	e.Bool(m.More)
	return e.Bytes()
}

func (m *RangeResponse) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagRangeResponse)
	n := d.Count("kvs", maxListLen, minKVSize, nil)
	m.KVs = make([]KV, n)
	for i := range m.KVs {
		m.KVs[i] = d.KV()
	}
	m.Revision = d.NonNegative("revision")
	m.More = d.Bool("more")
	return d.Finish()
}

func (m *TxnResponse) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagTxnResponse)
	e.Bool(m.Result.Succeeded)
	e.Varint(m.Result.Revision)
	e.Uvarint(uint64(len(m.Result.Results)))
	for i := range m.Result.Results {
		r := &m.Result.Results[i]
		e.Bool(r.Found)
		e.KV(&r.KV)
	}
	return e.Bytes()
}

func (m *TxnResponse) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagTxnResponse)
	m.Result.Succeeded = d.Bool("succeeded")
	m.Result.Revision = d.NonNegative("revision")
	n := d.Count("results", storage.MaxTxnOps, minKVSize+1, nil)
	m.Result.Results = make([]OpResult, n)
	for i := range m.Result.Results {
		r := &m.Result.Results[i]
		r.Found = d.Bool("found")
		r.KV = d.KV()
	}
	return d.Finish()
}

func (m *RevisionResponse) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagRevisionResponse)
	e.Varint(m.Current)
	e.Varint(m.Compacted)
	return e.Bytes()
}

func (m *RevisionResponse) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagRevisionResponse)
	m.Current = d.NonNegative("current revision")
	m.Compacted = d.NonNegative("compacted revision")
	return d.Finish()
}

func (m *ReadIndexResponse) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagReadIndexResponse)
	e.Uvarint(m.Index)
	return e.Bytes()
}

func (m *ReadIndexResponse) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagReadIndexResponse)
	m.Index = d.Uvarint("index")
	return d.Finish()
}

func (m *StatusResponse) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagStatusResponse)
	s := &m.Status
	e.String(s.ID)
	e.String(s.ClusterID)
	e.String(s.State)
	e.Uvarint(s.Term)
	e.Uvarint(s.LastLogIndex)
	e.Uvarint(s.CommitIndex)
	e.Uvarint(s.AppliedIndex)
	e.Uvarint(s.LastSnapshotIndex)
	e.Varint(s.Revision)
	e.Varint(s.Compacted)
	e.member(&s.Leader)
	e.Uvarint(uint64(len(s.Members)))
	for i := range s.Members {
		e.member(&s.Members[i])
	}
	e.Varint(s.DBSize)
	e.Varint(s.LastSnapshotTime)
	e.Varint(s.LastSnapshotSize)
	return e.Bytes()
}

func (m *StatusResponse) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagStatusResponse)
	s := &m.Status
	s.ID = d.String("id", MaxIDLen)
	s.ClusterID = d.String("cluster id", MaxIDLen)
	s.State = d.String("state", 32)
	s.Term = d.Uvarint("term")
	s.LastLogIndex = d.Uvarint("last log index")
	s.CommitIndex = d.Uvarint("commit index")
	s.AppliedIndex = d.Uvarint("applied index")
	s.LastSnapshotIndex = d.Uvarint("last snapshot index")
	s.Revision = d.NonNegative("revision")
	s.Compacted = d.NonNegative("compacted")
	s.Leader = d.member()
	n := d.Count("members", 1024, minMemberSize, nil)
	s.Members = make([]Member, n)
	for i := range s.Members {
		s.Members[i] = d.member()
	}
	s.DBSize = d.NonNegative("db size")
	s.LastSnapshotTime = d.NonNegative("last snapshot time")
	s.LastSnapshotSize = d.NonNegative("last snapshot size")
	return d.Finish()
}

// EncodeAck encodes the empty success response.
func EncodeAck() []byte { return EncodeEmpty(TagAck) }

func (m *Error) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagError)
	e.encodeErrorFields(m)
	return e.Bytes()
}

func (e *Encoder) encodeErrorFields(m *Error) {
	e.Uvarint(uint64(m.Code))
	e.String(m.Message)
	e.String(m.Leader)
}

func (d *Decoder) errorFields() *Error {
	code := d.Uvarint("error code")
	msg := d.String("error message", 64<<10)
	leader := d.String("leader hint", MaxAddrLen)
	if code > 0xffff {
		d.failf("error code %d out of range", code)
	}
	return &Error{Code: Code(code), Message: msg, Leader: leader}
}

// Decode decodes an error body into m.
func (m *Error) Decode(b []byte) error {
	e, err := DecodeError(b)
	if err != nil {
		return err
	}
	*m = *e
	return nil
}

// DecodeError decodes an error body.
func DecodeError(b []byte) (*Error, error) {
	d := NewDecoder(b)
	d.Header(TagError)
	m := d.errorFields()
	return m, d.Finish()
}

// PeekTag returns the message tag of an encoded body, or an error if the
// header is malformed or of another version.
func PeekTag(b []byte) (Tag, error) {
	if len(b) < 2 {
		return 0, Errorf(CodeMalformed, "body of %d bytes has no header", len(b))
	}
	if b[0] != Version {
		return 0, &Error{Code: CodeVersion, Message: "flaredb: unsupported protocol version: got " + itoa(int(b[0]))}
	}
	return Tag(b[1]), nil
}

func itoa(v int) string {
	if v == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for v > 0 {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return string(buf[i:])
}

// Watch frames.

func (m *WatchFrame) Encode() []byte {
	e := NewEncoder(nil)
	e.header(TagWatchFrame)
	e.Byte(byte(m.Kind))
	switch m.Kind {
	case FrameEvents:
		e.Varint(m.Revision)
		e.Bool(m.Complete)
		e.Uvarint(uint64(len(m.Events)))
		for i := range m.Events {
			e.Byte(byte(m.Events[i].Type))
			e.KV(&m.Events[i].KV)
		}
	case FrameProgress:
		e.Varint(m.Revision)
	case FrameError:
		e.encodeErrorFields(m.Err)
	}
	return e.Bytes()
}

func (m *WatchFrame) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagWatchFrame)
	*m = WatchFrame{Kind: FrameKind(d.Byte("frame kind"))}
	switch m.Kind {
	case FrameEvents:
		m.Revision = d.NonNegative("revision")
		m.Complete = d.Bool("complete")
		n := d.Count("events", maxListLen, minEventSize, nil)
		m.Events = make([]Event, n)
		for i := range m.Events {
			ev := &m.Events[i]
			ev.Type = EventType(d.Byte("event type"))
			if ev.Type > EventDelete {
				d.failf("event type %d", ev.Type)
			}
			ev.KV = d.KV()
			if d.err == nil && ev.KV.ModRevision != m.Revision {
				d.failf("event revision %d in a frame of revision %d", ev.KV.ModRevision, m.Revision)
			}
		}
	case FrameProgress:
		m.Revision = d.NonNegative("revision")
	case FrameError:
		m.Err = d.errorFields()
	default:
		d.failf("unknown frame kind %d", m.Kind)
	}
	return d.Finish()
}
