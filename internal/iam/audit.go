package iam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// auditPrefix holds audit records; record IDs sort by time.
const auditPrefix = "/iam/audit/"

// auditQueue is how many records may wait to be written; a full queue
// makes requests wait (up to auditEnqueueTimeout) rather than lose records.
const (
	auditQueue          = 8192
	auditBatch          = storage.MaxTxnOps
	auditEnqueueTimeout = 5 * time.Second
	auditLinger         = 5 * time.Millisecond
)

// auditLog appends audit records to the store. Requests hand records over
// through a queue; one writer commits them in batches, so auditing costs a
// mutating request a channel send, not an extra fsync. On shutdown (after
// the HTTP server has drained) the writer flushes the queue.
type auditLog struct {
	store storage.Store
	log   *slog.Logger
	node  string
	now   func() time.Time
	q     chan iamv1.AuditRecord
	seq   atomic.Uint64

	written, dropped prometheus.Counter
}

var _ apiserver.Auditor = (*auditLog)(nil)

func newAuditLog(store storage.Store, log *slog.Logger, node string, now func() time.Time) *auditLog {
	return &auditLog{store: store, log: log, node: node, now: now, q: make(chan iamv1.AuditRecord, auditQueue),
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "ultracloud_iam_audit_records_total", Help: "Audit records written to the store."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "ultracloud_iam_audit_dropped_total", Help: "Audit records dropped because the queue stayed full."}),
	}
}

// auditID returns a record ID that sorts by time: nanoseconds since the
// epoch (19 digits), node, and a per-process sequence number.
func (l *auditLog) auditID(t time.Time) string {
	return fmt.Sprintf("%019d-%s-%010d", t.UnixNano(), l.node, l.seq.Add(1))
}

// Record implements apiserver.Auditor.
func (l *auditLog) Record(ctx context.Context, ev apiserver.AuditEvent) {
	rec := iamv1.AuditRecord{
		ID: l.auditID(ev.Time), Time: ev.Time, Principal: ev.Principal, Verb: ev.Verb, Method: ev.Method, Path: ev.Path,
		Component: ev.Component, Collection: ev.Collection, Project: ev.Project, Name: ev.Name, Code: ev.Code,
		RequestID: ev.RequestID, SourceIP: ev.SourceIP, Node: l.node,
	}
	select {
	case l.q <- rec:
		return
	default:
	}
	t := time.NewTimer(auditEnqueueTimeout)
	defer t.Stop()
	select {
	case l.q <- rec:
	case <-t.C:
		l.dropped.Inc()
		l.log.Error("audit queue full; record dropped", "path", rec.Path, "principal", rec.Principal)
	case <-ctx.Done():
		l.dropped.Inc()
	}
}

// run writes queued records until ctx ends, then flushes what is queued.
func (l *auditLog) run(ctx context.Context) error {
	for {
		select {
		case rec := <-l.q:
			l.writeBatch(ctx, rec)
		case <-ctx.Done():
			flush := context.WithoutCancel(ctx)
			for {
				select {
				case rec := <-l.q:
					l.writeBatch(flush, rec)
				default:
					return nil
				}
			}
		}
	}
}

func (l *auditLog) writeBatch(ctx context.Context, first iamv1.AuditRecord) {
	batch := []iamv1.AuditRecord{first}
	// Gather what else arrives within auditLinger, so a steady trickle of
	// requests shares one store write (one fsync) instead of one each.
	linger := time.NewTimer(auditLinger)
	defer linger.Stop()
gather:
	for len(batch) < auditBatch {
		select {
		case rec := <-l.q:
			batch = append(batch, rec)
		case <-linger.C:
			break gather
		case <-ctx.Done():
			break gather
		}
	}
	ops := make([]storage.Op, 0, len(batch))
	for _, rec := range batch {
		b, err := json.Marshal(rec)
		if err != nil {
			continue
		}
		ops = append(ops, storage.Op{Type: storage.OpPut, Key: []byte(auditPrefix + rec.ID), Value: b})
	}
	for attempt := 0; ; attempt++ {
		_, err := l.store.Txn(ctx, storage.Txn{Then: ops})
		if err == nil {
			l.written.Add(float64(len(ops)))
			return
		}
		if attempt >= 3 || ctx.Err() != nil {
			l.dropped.Add(float64(len(ops)))
			l.log.Error("writing audit records failed", "count", len(ops), "err", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
}

// prune deletes records older than before, a batch at a time.
func (l *auditLog) prune(ctx context.Context, before time.Time) (int, error) {
	end := []byte(fmt.Sprintf("%s%019d", auditPrefix, before.UnixNano()))
	deleted := 0
	for {
		kvs, _, err := l.store.Range(ctx, []byte(auditPrefix), end, storage.MaxTxnOps)
		if err != nil {
			return deleted, err
		}
		if len(kvs) == 0 {
			return deleted, nil
		}
		ops := make([]storage.Op, len(kvs))
		for i, kv := range kvs {
			ops[i] = storage.Op{Type: storage.OpDelete, Key: kv.Key}
		}
		if _, err := l.store.Txn(ctx, storage.Txn{Then: ops}); err != nil {
			return deleted, err
		}
		deleted += len(kvs)
	}
}

// auditQuery selects records.
type auditQuery struct {
	since, until time.Time // zero: unbounded
	principal    string
	project      string // only records of this project ("" any)
	after        string // record ID to continue after
	limit        int
}

// validAuditID reports whether s looks like an ID auditID made.
func validAuditID(s string) bool {
	if len(s) < 21 || len(s) > 200 || s[19] != '-' {
		return false
	}
	if _, err := strconv.ParseUint(s[:19], 10, 64); err != nil {
		return false
	}
	return !strings.ContainsAny(s, "/\x00")
}

// query reads one page of matching records, oldest first, scanning at most
// scanBudget records.
func (l *auditLog) query(ctx context.Context, q auditQuery) (*iamv1.AuditList, error) {
	start := []byte(auditPrefix)
	if !q.since.IsZero() {
		start = []byte(fmt.Sprintf("%s%019d", auditPrefix, max(q.since.UnixNano(), 0)))
	}
	if q.after != "" {
		if a := []byte(auditPrefix + q.after + "\x00"); string(a) > string(start) {
			start = a
		}
	}
	end := prefixEnd(auditPrefix)
	if !q.until.IsZero() {
		end = []byte(fmt.Sprintf("%s%019d", auditPrefix, max(q.until.UnixNano(), 0)))
	}
	out := &iamv1.AuditList{Items: []iamv1.AuditRecord{}}
	const scanBudget = 10000
	scanned := 0
	for {
		kvs, _, err := l.store.Range(ctx, start, end, 512)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			scanned++
			var rec iamv1.AuditRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				continue
			}
			if (q.principal == "" || rec.Principal == q.principal) && (q.project == "" || rec.Project == q.project) {
				out.Items = append(out.Items, rec)
			}
			if len(out.Items) == q.limit || scanned >= scanBudget {
				out.Continue = rec.ID
				return out, nil
			}
		}
		if len(kvs) < 512 {
			return out, nil
		}
		start = append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
	}
}
