// Package storage defines the key-value store interface that every component's
// resources are kept in: point reads, ordered range scans, multi-key
// transactions with compare-and-swap on revisions (and a compare that a key
// range is empty), and watches that resume from a revision.
//
// Every successful write transaction advances one store-wide revision; each key
// remembers the revision that created it and the one that last changed it. The
// package owns the contract only. Implementations live in sub-packages: an
// embedded single-node one on Pebble (storage/pebblestore) and, later, a
// replicated one on flaredb. Callers must not depend on which one they get.
package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// Limits every implementation enforces; a write that breaks one is rejected
// whole and changes nothing.
const (
	MaxKeySize   = 4 << 10    // 4 KiB
	MaxValueSize = 1536 << 10 // 1.5 MiB
	MaxTxnOps    = 128
)

// Sentinel errors. Wrap them with %w and test with errors.Is; never match text.
var (
	ErrNotFound      = errors.New("storage: key not found")
	ErrCompacted     = errors.New("storage: revision compacted")
	ErrFutureRev     = errors.New("storage: revision is in the future")
	ErrEmptyKey      = errors.New("storage: empty key")
	ErrKeyTooLarge   = errors.New("storage: key too large")
	ErrValueTooLarge = errors.New("storage: value too large")
	ErrTooManyOps    = errors.New("storage: too many operations in one transaction")
	ErrClosed        = errors.New("storage: store is closed")
	// ErrInvalidRange: a CompareRangeEmpty whose RangeEnd does not sort
	// after its Key, or a RangeEnd on a compare of another target.
	ErrInvalidRange = errors.New("storage: invalid compare range")
)

// KV is one stored key with its value and revisions. ModRevision is the
// revision of the write that produced this value; CreateRevision that of the
// write that created the key (it is reset when a key is deleted and recreated).
type KV struct {
	Key            []byte
	Value          []byte
	CreateRevision int64
	ModRevision    int64
}

// CompareTarget names what a Compare checks.
type CompareTarget int

const (
	// CompareModRevision holds when the key's ModRevision equals Revision;
	// Revision 0 means "the key does not exist".
	CompareModRevision CompareTarget = iota
	// CompareValue holds when the key exists and its value equals Value.
	CompareValue
	// CompareExists holds when the key exists.
	CompareExists
	// CompareMissing holds when the key does not exist.
	CompareMissing
	// CompareRangeEmpty holds when no key k with Key <= k < RangeEnd
	// exists. It covers a range, not one key, so Holds cannot decide it:
	// each Store looks the range up itself.
	CompareRangeEmpty
)

// Compare is one condition of a transaction.
//
// Every compare of a transaction is evaluated against the same state, the
// one the transaction runs on (every transaction committed before it, none
// after), in the same atomic step as its operations; its own operations
// never change what its compares see.
//
// RangeEnd is used by CompareRangeEmpty only, and must sort strictly after
// Key (bytes.Compare); its length is bounded like a key's. It is the way to
// require "nothing under this prefix" race-free: with RangeEnd =
// PrefixEnd(prefix), a transaction that holds it commits only if no key
// under the prefix exists at that moment, and a concurrent transaction that
// creates one is ordered either before it (the compare fails) or after it.
// A RangeEnd that does not sort after Key, or a RangeEnd set on a compare of
// another target, makes the whole transaction fail with ErrInvalidRange.
// CompareRangeEmpty ignores Revision and Value.
type Compare struct {
	Key      []byte
	Target   CompareTarget
	Revision int64
	Value    []byte
	RangeEnd []byte
}

// CheckRange validates c's RangeEnd against its target, wrapping
// ErrInvalidRange. Key limits are checked separately.
func (c Compare) CheckRange() error {
	if c.Target != CompareRangeEmpty {
		if c.RangeEnd != nil {
			return fmt.Errorf("%w: range end set on a single-key compare (target %d)", ErrInvalidRange, c.Target)
		}
		return nil
	}
	if bytes.Compare(c.RangeEnd, c.Key) <= 0 {
		return fmt.Errorf("%w: range end %q does not sort after key %q", ErrInvalidRange, c.RangeEnd, c.Key)
	}
	if len(c.RangeEnd) > MaxKeySize {
		return fmt.Errorf("range end of %d bytes (max %d): %w", len(c.RangeEnd), MaxKeySize, ErrKeyTooLarge)
	}
	return nil
}

// PrefixEnd returns the smallest key greater than every key that starts
// with prefix, for a range over the prefix; nil if there is none (prefix
// is empty or all 0xff bytes).
func PrefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0xff {
			end := bytes.Clone(prefix[:i+1])
			end[i]++
			return end
		}
	}
	return nil
}

// Holds reports whether c holds for its key in the state given: whether
// the key exists, its ModRevision and its value. Every Store evaluates
// single-key compares with it; it reports false for CompareRangeEmpty,
// which the Store evaluates over its range.
func (c Compare) Holds(found bool, modRevision int64, value []byte) bool {
	switch c.Target {
	case CompareModRevision:
		if c.Revision == 0 {
			return !found
		}
		return found && modRevision == c.Revision
	case CompareValue:
		return found && bytes.Equal(value, c.Value)
	case CompareExists:
		return found
	case CompareMissing:
		return !found
	}
	return false
}

// OpType is the kind of an Op.
type OpType int

const (
	OpGet OpType = iota
	OpPut
	OpDelete
)

// Op is one operation of a transaction branch.
type Op struct {
	Type  OpType
	Key   []byte
	Value []byte // OpPut only
}

// Txn is an atomic multi-key transaction: if every Compare in If holds, Then
// runs, otherwise Else runs. An empty If always holds.
type Txn struct {
	If   []Compare
	Then []Op
	Else []Op
}

// OpResult is the outcome of one Op of the branch that ran, in order.
// For OpGet: KV and Found describe the key as seen inside the transaction.
// For OpPut: KV is the new value with its revisions; Found tells whether the key
// existed before. For OpDelete: KV is the value that was deleted; Found tells
// whether there was one.
type OpResult struct {
	KV    KV
	Found bool
}

// TxnResult is the outcome of a transaction. Revision is the revision the
// transaction's writes were made at, or the current store revision when the
// branch that ran wrote nothing.
type TxnResult struct {
	Succeeded bool
	Revision  int64
	Results   []OpResult
}

// EventType says whether an Event is a put or a delete.
type EventType int

const (
	EventPut EventType = iota
	EventDelete
)

// Event is one change seen by a watch. For EventPut, KV is the new value. For
// EventDelete, KV holds the key, the value it had just before the delete, its
// CreateRevision, and ModRevision set to the revision of the delete.
type Event struct {
	Type EventType
	KV   KV
}

// Watcher streams the changes under one prefix in revision order, each change
// exactly once. Events of one transaction share a revision and arrive together
// in key order.
type Watcher interface {
	// Events is closed when the watch ends: its context ended, Close was
	// called, or the watch failed. Err then says why.
	Events() <-chan Event
	// Err is nil while Events is open and after a clean end (context ended or
	// Close); otherwise the error that ended the watch.
	Err() error
	// Close ends the watch and releases its resources. It is safe to call more
	// than once.
	Close()
}

// Store is the contract every storage implementation meets. All methods are
// safe for concurrent use. A write is durable (on stable storage) before the
// call that made it returns success.
type Store interface {
	// Get returns the current value of key, or ErrNotFound.
	Get(ctx context.Context, key []byte) (KV, error)
	// Range returns, in key order, up to limit keys k with start <= k < end
	// (end nil means no upper bound; limit <= 0 means no limit), and the store
	// revision the read saw.
	Range(ctx context.Context, start, end []byte, limit int) ([]KV, int64, error)
	// Txn runs an atomic transaction.
	Txn(ctx context.Context, txn Txn) (TxnResult, error)
	// Watch streams every change to keys under prefix with revision >=
	// fromRevision (0 means "changes after now"). It fails at once with
	// ErrCompacted if fromRevision is at or below the compacted revision, and
	// with ErrFutureRev if it is beyond the current revision + 1. A revision
	// any read or write has returned is never "in the future": watching from
	// it + 1 right after that call must succeed.
	Watch(ctx context.Context, prefix []byte, fromRevision int64) (Watcher, error)
	// Revision returns the current revision and the compacted revision (the
	// highest revision whose history has been discarded; 0 if none).
	Revision(ctx context.Context) (current, compacted int64, err error)
	// Compact discards change history for revisions < rev so watches can no
	// longer start there. Current values are never discarded.
	Compact(ctx context.Context, rev int64) error
	// Close releases the store; later calls return ErrClosed.
	Close() error
}
