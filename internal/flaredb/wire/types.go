package wire

import (
	"bytes"
	"fmt"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Version is the protocol version this package speaks (see the changelog in
// the package doc).
const Version byte = 1

// Limits beyond storage's per-key limits.
const (
	// MaxRequestBytes bounds one request body (and so one transaction).
	MaxRequestBytes = 32 << 20
	// MaxFrameBytes bounds one response body or watch frame.
	MaxFrameBytes = 48 << 20
	// MaxTTLSeconds is the longest TTL a put may carry (ten years).
	MaxTTLSeconds = 10 * 365 * 24 * 3600
	// MaxRawKeySize is the largest key inside the store: a namespace prefix
	// plus a user key.
	MaxRawKeySize = MaxNamespaceLen + 1 + storage.MaxKeySize
	// MaxIDLen and MaxAddrLen bound member IDs and addresses.
	MaxIDLen   = 128
	MaxAddrLen = 256
	// maxListLen bounds the count of KVs, events, members in a response.
	maxListLen = 1 << 24
)

// Tag identifies a message type. Values are part of the protocol.
type Tag byte

const (
	TagGetRequest            Tag = 1
	TagRangeRequest          Tag = 2
	TagTxnRequest            Tag = 3
	TagWatchRequest          Tag = 4
	TagRevisionRequest       Tag = 5
	TagCompactRequest        Tag = 6
	TagReadIndexRequest      Tag = 7
	TagStatusRequest         Tag = 8
	TagMemberAddRequest      Tag = 9
	TagMemberRemoveRequest   Tag = 10
	TagTransferLeaderRequest Tag = 11
	TagSnapshotRequest       Tag = 12

	TagGetResponse       Tag = 64
	TagRangeResponse     Tag = 65
	TagTxnResponse       Tag = 66
	TagRevisionResponse  Tag = 67
	TagAck               Tag = 68
	TagReadIndexResponse Tag = 69
	TagStatusResponse    Tag = 70
	TagWatchFrame        Tag = 71
	TagError             Tag = 72
)

var tagNames = map[Tag]string{
	TagGetRequest: "get request", TagRangeRequest: "range request", TagTxnRequest: "txn request",
	TagWatchRequest: "watch request", TagRevisionRequest: "revision request", TagCompactRequest: "compact request",
	TagReadIndexRequest: "read index request", TagStatusRequest: "status request",
	TagMemberAddRequest: "member add request", TagMemberRemoveRequest: "member remove request",
	TagTransferLeaderRequest: "transfer leader request", TagSnapshotRequest: "snapshot request",
	TagGetResponse: "get response", TagRangeResponse: "range response", TagTxnResponse: "txn response",
	TagRevisionResponse: "revision response", TagAck: "ack", TagReadIndexResponse: "read index response",
	TagStatusResponse: "status response", TagWatchFrame: "watch frame", TagError: "error",
	TagStreamCall: "stream call", TagStreamReply: "stream reply",
}

func (t Tag) String() string {
	if n, ok := tagNames[t]; ok {
		return n
	}
	return fmt.Sprintf("tag %d", byte(t))
}

// Consistency selects how a read is served.
type Consistency byte

const (
	// Linearizable reads reflect every write acknowledged before the read
	// started (ReadIndex through the leader).
	Linearizable Consistency = 0
	// Stale reads are served from the member's local state, which may lag.
	Stale Consistency = 1
)

// OpType is the kind of an Op; values match storage.OpType.
type OpType byte

const (
	OpGet    OpType = 0
	OpPut    OpType = 1
	OpDelete OpType = 2
)

// Op is one operation of a transaction branch. TTL (seconds, puts only) makes
// the key expire: it is deleted (a normal delete with its own revision) once
// the leader sees it expired. 0 means no expiry.
type Op struct {
	Type  OpType
	Key   []byte
	Value []byte
	TTL   int64
}

// CompareTarget matches storage.CompareTarget.
type CompareTarget byte

const (
	CompareModRevision CompareTarget = 0
	CompareValue       CompareTarget = 1
	CompareExists      CompareTarget = 2
	CompareMissing     CompareTarget = 3
	// CompareRangeEmpty holds when no key k with Key <= k < RangeEnd
	// exists. On the wire RangeEnd takes the place of the value.
	CompareRangeEmpty CompareTarget = 4
)

// Compare is one condition of a transaction (see storage.Compare). Value is
// for CompareValue, RangeEnd for CompareRangeEmpty only.
type Compare struct {
	Key      []byte
	Target   CompareTarget
	Revision int64
	Value    []byte
	RangeEnd []byte
}

// Txn is an atomic transaction: if every compare holds, Then runs, else Else.
type Txn struct {
	If   []Compare
	Then []Op
	Else []Op
}

// KV is a stored key. ExpiresAt is the expiry in Unix milliseconds (leader
// clock at the write plus the TTL), 0 if none.
type KV struct {
	Key            []byte
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	ExpiresAt      int64
}

// OpResult is the outcome of one op (see storage.OpResult).
type OpResult struct {
	KV    KV
	Found bool
}

// TxnResult is the outcome of a transaction (see storage.TxnResult).
type TxnResult struct {
	Succeeded bool
	Revision  int64
	Results   []OpResult
}

// EventType matches storage.EventType.
type EventType byte

const (
	EventPut    EventType = 0
	EventDelete EventType = 1
)

// Event is one change (see storage.Event).
type Event struct {
	Type EventType
	KV   KV
}

// Member is one member of the cluster.
type Member struct {
	ID          string
	RaftAddress string
	APIAddress  string
	Voter       bool
}

// Requests.

type GetRequest struct {
	Namespace   string
	Key         []byte
	Revision    int64 // 0: latest
	Consistency Consistency
}

type RangeRequest struct {
	Namespace   string
	Start, End  []byte // End nil: to the end of the namespace
	Limit       int64  // <= 0: no limit (the server may still page)
	Revision    int64  // 0: latest
	Reverse     bool
	Consistency Consistency
}

type TxnRequest struct {
	Namespace string
	Txn       Txn
}

type WatchRequest struct {
	Namespace    string
	Prefix       []byte
	FromRevision int64 // 0: changes after now
}

type RevisionRequest struct {
	Consistency Consistency
}

type CompactRequest struct {
	Revision int64
}

type MemberAddRequest struct {
	Member Member
}

type MemberRemoveRequest struct {
	ID string
}

type TransferLeaderRequest struct {
	ID string // "" lets raft pick
}

// Responses.

type GetResponse struct {
	Found bool
	KV    KV
	// Revision is a store revision at or below the state the read saw:
	// watching from Revision+1 misses nothing. (For a read at a past
	// revision it is that revision.)
	Revision int64
}

type RangeResponse struct {
	KVs      []KV
	Revision int64
	// More is set when the server stopped early (limit or size) and more
	// keys remain in the range.
	More bool
}

type TxnResponse struct {
	Result TxnResult
}

type RevisionResponse struct {
	Current, Compacted int64
}

type ReadIndexResponse struct {
	Index uint64
}

// Status is a member's view of the cluster.
type Status struct {
	ID                string
	ClusterID         string
	State             string // Leader, Follower, Candidate, Shutdown
	Term              uint64
	LastLogIndex      uint64
	CommitIndex       uint64
	AppliedIndex      uint64
	LastSnapshotIndex uint64
	Revision          int64
	Compacted         int64
	Leader            Member // empty ID if unknown
	Members           []Member
	// DBSize is the state machine's size on disk in bytes; LastSnapshotTime
	// (unix ms, 0: none) and LastSnapshotSize describe the newest Raft
	// snapshot.
	DBSize           int64
	LastSnapshotTime int64
	LastSnapshotSize int64
}

type StatusResponse struct {
	Status Status
}

// FrameKind is the kind of a watch frame.
type FrameKind byte

const (
	// FrameEvents carries events of Revision. A revision's events may span
	// several frames; Complete marks the last one.
	FrameEvents FrameKind = 0
	// FrameProgress says every event with revision <= Revision has been
	// sent. The first frame of every watch is a progress frame (Revision =
	// from-1) confirming it started.
	FrameProgress FrameKind = 1
	// FrameError ends the watch with Err.
	FrameError FrameKind = 2
)

// WatchFrame is one message of a watch stream.
type WatchFrame struct {
	Kind     FrameKind
	Revision int64
	Complete bool
	Events   []Event
	Err      *Error
}

// Conversions to and from storage types.

// FromStorageTxn converts a storage transaction (no TTLs). It aliases keys and
// values.
func FromStorageTxn(t storage.Txn) Txn {
	out := Txn{If: make([]Compare, len(t.If))}
	for i, c := range t.If {
		out.If[i] = Compare{Key: c.Key, Target: CompareTarget(c.Target), Revision: c.Revision, Value: c.Value, RangeEnd: c.RangeEnd}
		if c.Target == storage.CompareRangeEmpty {
			out.If[i].Value = nil // ignored by the target, and no room for it on the wire
		}
	}
	conv := func(ops []storage.Op) []Op {
		r := make([]Op, len(ops))
		for i, op := range ops {
			r[i] = Op{Type: OpType(op.Type), Key: op.Key}
			if op.Type == storage.OpPut {
				r[i].Value = op.Value
			}
		}
		return r
	}
	out.Then, out.Else = conv(t.Then), conv(t.Else)
	return out
}

// Storage converts a KV.
func (kv KV) Storage() storage.KV {
	return storage.KV{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision}
}

// Storage converts a txn result.
func (r TxnResult) Storage() storage.TxnResult {
	out := storage.TxnResult{Succeeded: r.Succeeded, Revision: r.Revision, Results: make([]storage.OpResult, len(r.Results))}
	for i, or := range r.Results {
		out.Results[i] = storage.OpResult{KV: or.KV.Storage(), Found: or.Found}
	}
	return out
}

// Storage converts an event.
func (e Event) Storage() storage.Event {
	return storage.Event{Type: storage.EventType(e.Type), KV: e.KV.Storage()}
}

// HasWrites reports whether any branch of t may write.
func (t *Txn) HasWrites() bool {
	for _, ops := range [][]Op{t.Then, t.Else} {
		for _, op := range ops {
			if op.Type == OpPut || op.Type == OpDelete {
				return true
			}
		}
	}
	return false
}

// Validate checks t against the limits with keys of at most maxKey bytes
// (storage.MaxKeySize for user keys, MaxRawKeySize inside the store). Errors
// wrap the storage sentinels, or ErrInvalid for unknown enums and bad TTLs.
func (t *Txn) Validate(maxKey int) error {
	for _, part := range []struct {
		name string
		n    int
	}{{"if", len(t.If)}, {"then", len(t.Then)}, {"else", len(t.Else)}} {
		if part.n > storage.MaxTxnOps {
			return fmt.Errorf("%d %s entries (max %d): %w", part.n, part.name, storage.MaxTxnOps, storage.ErrTooManyOps)
		}
	}
	for i, c := range t.If {
		if err := checkKey(c.Key, maxKey); err != nil {
			return fmt.Errorf("compare %d: %w", i, err)
		}
		if c.Target != CompareRangeEmpty && c.RangeEnd != nil {
			return fmt.Errorf("compare %d: range end set on a single-key compare (target %d): %w", i, c.Target, storage.ErrInvalidRange)
		}
		switch c.Target {
		case CompareModRevision, CompareExists, CompareMissing:
		case CompareValue:
			if len(c.Value) > storage.MaxValueSize {
				return fmt.Errorf("compare %d: value of %d bytes (max %d): %w", i, len(c.Value), storage.MaxValueSize, storage.ErrValueTooLarge)
			}
		case CompareRangeEmpty:
			if len(c.Value) != 0 {
				return fmt.Errorf("compare %d: a range compare carries no value: %w", i, ErrInvalid)
			}
			if len(c.RangeEnd) > maxKey {
				return fmt.Errorf("compare %d: range end of %d bytes (max %d): %w", i, len(c.RangeEnd), maxKey, storage.ErrKeyTooLarge)
			}
			if bytes.Compare(c.RangeEnd, c.Key) <= 0 {
				return fmt.Errorf("compare %d: range end %q does not sort after key %q: %w", i, c.RangeEnd, c.Key, storage.ErrInvalidRange)
			}
		default:
			return fmt.Errorf("compare %d: unknown target %d: %w", i, c.Target, ErrInvalid)
		}
		if c.Revision < 0 {
			return fmt.Errorf("compare %d: negative revision %d: %w", i, c.Revision, ErrInvalid)
		}
	}
	for _, branch := range []struct {
		name string
		ops  []Op
	}{{"then", t.Then}, {"else", t.Else}} {
		for i, op := range branch.ops {
			if err := checkKey(op.Key, maxKey); err != nil {
				return fmt.Errorf("%s op %d: %w", branch.name, i, err)
			}
			switch op.Type {
			case OpGet, OpDelete:
				if op.TTL != 0 || len(op.Value) != 0 {
					return fmt.Errorf("%s op %d: only puts carry a value or TTL: %w", branch.name, i, ErrInvalid)
				}
			case OpPut:
				if len(op.Value) > storage.MaxValueSize {
					return fmt.Errorf("%s op %d: value of %d bytes (max %d): %w", branch.name, i, len(op.Value), storage.MaxValueSize, storage.ErrValueTooLarge)
				}
				if op.TTL < 0 || op.TTL > MaxTTLSeconds {
					return fmt.Errorf("%s op %d: TTL %d s out of range 0..%d: %w", branch.name, i, op.TTL, MaxTTLSeconds, ErrInvalid)
				}
			default:
				return fmt.Errorf("%s op %d: unknown op type %d: %w", branch.name, i, op.Type, ErrInvalid)
			}
		}
	}
	return nil
}

// Validate checks a member description for MemberAdd.
func (m Member) Validate() error {
	if m.ID == "" || m.RaftAddress == "" || m.APIAddress == "" {
		return Errorf(CodeInvalid, "a member needs an id, a raft address and an api address")
	}
	if len(m.ID) > MaxIDLen || len(m.RaftAddress) > MaxAddrLen || len(m.APIAddress) > MaxAddrLen {
		return Errorf(CodeInvalid, "member id or address too long")
	}
	return nil
}

// CheckUserKey checks a user key against storage's limits.
func CheckUserKey(key []byte) error { return checkKey(key, storage.MaxKeySize) }

func checkKey(key []byte, max int) error {
	if len(key) == 0 {
		return storage.ErrEmptyKey
	}
	if len(key) > max {
		return fmt.Errorf("key of %d bytes (max %d): %w", len(key), max, storage.ErrKeyTooLarge)
	}
	return nil
}
