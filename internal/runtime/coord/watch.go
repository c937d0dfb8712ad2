package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType is the kind of a change.
type EventType int

// Event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "PUT"
	case EventDelete:
		return "DELETE"
	}
	return "UNKNOWN"
}

// Event is one change to a key.
type Event struct {
	Type EventType
	Key  string
	// Value is the new value (nil for deletes).
	Value []byte
	// PrevValue is the value before the change, when known.
	PrevValue []byte
	// Revision is the change's revision (the key's ModRevision).
	Revision int64
	// CreateRevision and Version describe the key after a put.
	CreateRevision int64
	Version        int64
}

// Batch is what a watch delivers at once: changes in revision order, and
// the revision up to which every change under the prefix has now been
// delivered (resume a later watch from Revision+1). A batch without events
// reports progress only.
type Batch struct {
	Events   []Event
	Revision int64
}

// CompactedError says which history a watch asked for and where retained
// history begins. It wraps ErrCompacted.
type CompactedError struct {
	Requested int64
	Compacted int64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("coord: watch from revision %d: history before revision %d has been compacted; list again and watch from the list's revision", e.Requested, e.Compacted)
}

func (e *CompactedError) Unwrap() error { return ErrCompacted }

// watch reconnect backoff.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 2 * time.Second
)

// Watch calls fn with every change under prefix from revision fromRev on
// (fromRev <= 0: changes after now), in order, each exactly once, in the
// caller's goroutine. It resumes by itself from the next revision after
// disconnects, member restarts and leader loss. It returns nil when ctx
// ends, a *CompactedError (errors.Is ErrCompacted) when the history it
// needs has been compacted, or fn's error as is.
func (c *Client) Watch(ctx context.Context, prefix string, fromRev int64, fn func(Batch) error) error {
	next := fromRev
	if next <= 0 {
		// Pin "now" to a revision so a reconnect before the first
		// event resumes from the right place.
		resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("coord: watch %s: reading the current revision: %w", prefix, err)
		}
		next = resp.Header.Revision + 1
	}
	backoff := watchRetryMin
	for {
		delivered, err := c.watchOnce(ctx, prefix, &next, fn)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if delivered {
			backoff = watchRetryMin
		}
		c.log.Debug("watch interrupted; resuming", "prefix", prefix, "from_revision", next, "after", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, watchRetryMax)
	}
}

// watchOnce runs one watch stream from *next until it breaks. It advances
// *next past everything delivered. It returns an error only for compaction
// or fn's error.
func (c *Client) watchOnce(ctx context.Context, prefix string, next *int64, fn func(Batch) error) (delivered bool, err error) {
	// Require a leader so a member cut off from the cluster ends the
	// stream instead of going silent; we then resume elsewhere.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(*next),
		clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return delivered, &CompactedError{Requested: *next, Compacted: wr.CompactRevision}
		}
		if err := wr.Err(); err != nil {
			if !errors.Is(ctx.Err(), context.Canceled) {
				c.log.Debug("watch stream ended", "prefix", prefix, "err", err)
			}
			return delivered, nil
		}
		if wr.IsProgressNotify() {
			if rev := wr.Header.Revision; rev >= *next {
				*next = rev + 1
				if err := fn(Batch{Revision: rev}); err != nil {
					return delivered, err
				}
			}
			continue
		}
		if len(wr.Events) == 0 {
			continue
		}
		b := Batch{Events: make([]Event, 0, len(wr.Events))}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision < *next {
				continue // already delivered before a reconnect
			}
			e := Event{Key: string(ev.Kv.Key), Revision: ev.Kv.ModRevision}
			if ev.Type == mvccpb.DELETE {
				e.Type = EventDelete
			} else {
				e.Type, e.Value, e.CreateRevision, e.Version = EventPut, ev.Kv.Value, ev.Kv.CreateRevision, ev.Kv.Version
			}
			if ev.PrevKv != nil {
				e.PrevValue = ev.PrevKv.Value
			}
			b.Events = append(b.Events, e)
			b.Revision = e.Revision
		}
		if len(b.Events) == 0 {
			continue
		}
		*next = b.Revision + 1
		delivered = true
		if err := fn(b); err != nil {
			return delivered, err
		}
	}
	return delivered, nil
}
