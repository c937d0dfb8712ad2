//go:build linux

package flaredb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// This file is the worker side: it runs inside the switch namespace (see
// the package comment) and only records; the tests check.

// opTimeout bounds one client operation, retries included.
const opTimeout = 3 * time.Second

// workerMain runs the worker described by the JSON file at path and
// returns the process exit code.
func workerMain(path string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b, err := os.ReadFile(path)
	if err != nil {
		log.Error("reading input", "err", err)
		return 2
	}
	var in workerInput
	if err := json.Unmarshal(b, &in); err != nil {
		log.Error("decoding input", "err", err)
		return 2
	}
	var out any
	switch in.Kind {
	case "lin":
		out, err = runLinWorker(in, log)
	case "crash":
		out, err = runCrashWorker(in, log)
	case "watch":
		out, err = runWatchWorker(in, log)
	default:
		err = fmt.Errorf("unknown worker kind %q", in.Kind)
	}
	if err != nil {
		log.Error("worker failed", "err", err)
		return 1
	}
	b, err = json.Marshal(out)
	if err == nil {
		err = os.WriteFile(in.Output, b, 0o644)
	}
	if err != nil {
		log.Error("writing output", "err", err)
		return 1
	}
	return 0
}

// ready tells the test that the workload is running.
func ready() { fmt.Println("ready") }

// newClient returns a client whose first endpoint (where stale reads go,
// and where it starts looking for the leader) is endpoints[first].
func newClient(in workerInput, first int, log *slog.Logger) (*client.Client, error) {
	n := len(in.Endpoints)
	eps := make([]string, 0, n)
	for i := range n {
		eps = append(eps, in.Endpoints[(first+i)%n])
	}
	return client.New(client.Config{
		Endpoints: eps, ClusterID: in.ClusterID, DialTimeout: time.Second, Logger: log,
		CAFile: in.CAFile, CertFile: in.CertFile, KeyFile: in.KeyFile,
	})
}

// notApplied reports whether err proves a write was not applied: the
// client's contract is that a write fails with an error wrapping
// ErrUnknownOutcome when it may have been applied, and some member answered
// with a code wire.NotApplied covers otherwise. Anything else (a timeout
// whose last error was a refused connection, an internal error) counts as
// possibly applied, which is always safe for the checks.
func notApplied(err error) bool {
	if errors.Is(err, client.ErrUnknownOutcome) {
		return false
	}
	var we *wire.Error
	return errors.As(err, &we) && wire.NotApplied(we.Code)
}

func put(ctx context.Context, c *client.Client, ns, key, value string) (int64, error) {
	res, err := c.Txn(ctx, ns, wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: []byte(key), Value: []byte(value)}}})
	return res.Revision, err
}

// --- linearizability -------------------------------------------------------

// linNamespace holds the linearizability test's keys.
const linNamespace = "lintest"

// linRecord is one operation as a client saw it. Times are nanoseconds
// since the worker started.
type linRecord struct {
	Client int    `json:"c"`
	Op     string `json:"op"` // get, put, cas
	Key    string `json:"k"`
	Value  string `json:"v,omitempty"` // put/cas: the new value
	Old    string `json:"o,omitempty"` // cas: expected value ("" = missing)
	Call   int64  `json:"call"`
	Return int64  `json:"ret"`
	// Outcome: ok (a result), failed (definitely not applied: reads that
	// failed, writes refused), unknown (a write that may have applied).
	Outcome string `json:"out"`
	Found   bool   `json:"f,omitempty"`  // get
	Got     string `json:"g,omitempty"`  // get: the value read
	OK      bool   `json:"ok,omitempty"` // cas: the compare held
	Err     string `json:"err,omitempty"`
}

type linOutput struct {
	Records []linRecord `json:"records"`
}

func runLinWorker(in workerInput, log *slog.Logger) (*linOutput, error) {
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	clients := make([]*client.Client, in.Clients)
	for i := range clients {
		c, err := newClient(in, i, log)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[i] = c
	}
	deadline := time.Now().Add(in.Duration)
	var mu sync.Mutex
	var records []linRecord
	var wg sync.WaitGroup
	ready()
	for i, c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			seen := map[string]string{} // key -> last value this client saw ("" = missing)
			var mine []linRecord
			for seq := 0; time.Now().Before(deadline); seq++ {
				key := fmt.Sprintf("k%d", rng.IntN(in.Keys))
				r := linRecord{Client: i, Key: key}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				var err error
				switch p := rng.IntN(10); {
				case p < 4:
					r.Op = "get"
					r.Call = now()
					var kv wire.KV
					kv, r.Found, _, err = c.Get(ctx, linNamespace, []byte(key), client.ReadOptions{Stale: in.Stale})
					r.Return = now()
					r.Got = string(kv.Value)
					if err == nil {
						seen[key] = r.Got
					}
				case p < 7:
					r.Op = "put"
					r.Value = fmt.Sprintf("c%d-%d", i, seq)
					r.Call = now()
					_, err = put(ctx, c, linNamespace, key, r.Value)
					r.Return = now()
					if err == nil {
						seen[key] = r.Value
					}
				default:
					r.Op = "cas"
					r.Value = fmt.Sprintf("c%d-%d", i, seq)
					r.Old = seen[key]
					cmp := wire.Compare{Key: []byte(key), Target: wire.CompareValue, Value: []byte(r.Old)}
					if r.Old == "" {
						cmp = wire.Compare{Key: []byte(key), Target: wire.CompareMissing}
					}
					r.Call = now()
					var res wire.TxnResult
					res, err = c.Txn(ctx, linNamespace, wire.Txn{
						If:   []wire.Compare{cmp},
						Then: []wire.Op{{Type: wire.OpPut, Key: []byte(key), Value: []byte(r.Value)}},
					})
					r.Return = now()
					r.OK = res.Succeeded
					if err == nil && r.OK {
						seen[key] = r.Value
					}
				}
				cancel()
				switch {
				case err == nil:
					r.Outcome = "ok"
				case r.Op == "get" || notApplied(err):
					r.Outcome = "failed"
					r.Err = err.Error()
				default:
					r.Outcome = "unknown"
					r.Err = err.Error()
					// The key's value is unknown to this client now.
					delete(seen, key)
				}
				mine = append(mine, r)
			}
			mu.Lock()
			records = append(records, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return &linOutput{Records: records}, nil
}

// --- crash recovery ----------------------------------------------------------

const crashNamespace = "crashtest"

// crashWrite is one put of the crash test.
type crashWrite struct {
	Key     string `json:"k"`
	Value   string `json:"v"`
	Outcome string `json:"out"` // ok, failed, unknown
	Rev     int64  `json:"rev,omitempty"`
}

type crashOutput struct {
	// Writes per writer, in the order the writer issued them.
	Writes [][]crashWrite `json:"writes"`
	// Final is the state read (linearizably) after the writes ended, at
	// FinalRev.
	Final    map[string]string `json:"final"`
	FinalRev int64             `json:"finalRev"`
	// Members is the state each member serves from its own copy (a stale
	// read at FinalRev, after it applied at least that revision), by API
	// address; MemberErr says why one is missing.
	Members   map[string]map[string]string `json:"members"`
	MemberErr map[string]string            `json:"memberErr"`
}

// crashKeysPerWriter is how many keys each writer cycles through, so keys
// are overwritten many times.
const crashKeysPerWriter = 32

func runCrashWorker(in workerInput, log *slog.Logger) (*crashOutput, error) {
	c, err := newClient(in, 0, log)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := &crashOutput{Writes: make([][]crashWrite, in.Clients), Members: map[string]map[string]string{}, MemberErr: map[string]string{}}
	deadline := time.Now().Add(in.Duration)
	var acked atomic.Int64
	var wg sync.WaitGroup
	ready()
	for w := range in.Clients {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				cw := crashWrite{Key: fmt.Sprintf("w%02d/k%02d", w, i%crashKeysPerWriter), Value: fmt.Sprintf("w%02d-%06d", w, i)}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				rev, err := put(ctx, c, crashNamespace, cw.Key, cw.Value)
				cancel()
				switch {
				case err == nil:
					cw.Outcome, cw.Rev = "ok", rev
					acked.Add(1)
				case notApplied(err):
					cw.Outcome = "failed"
				default:
					cw.Outcome = "unknown"
				}
				out.Writes[w] = append(out.Writes[w], cw)
			}
		})
	}
	wg.Wait()
	log.Info("writes done", "acked", acked.Load())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var kvs []wire.KV
	for {
		kvs, out.FinalRev, err = c.Range(ctx, crashNamespace, nil, nil, client.RangeOptions{})
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("final read: %w", err)
	}
	out.Final = toMap(kvs)

	// Every member's own copy, once it has applied FinalRev.
	for i, ep := range in.Endpoints {
		mc, err := newClient(in, i, log)
		if err != nil {
			return nil, err
		}
		var got map[string]string
		for ctx.Err() == nil {
			var st wire.Status
			st, err = mc.Status(ctx, ep)
			if err == nil && st.Revision < out.FinalRev {
				err = fmt.Errorf("member at revision %d < %d", st.Revision, out.FinalRev)
			}
			if err == nil {
				var kvs []wire.KV
				kvs, _, err = mc.Range(ctx, crashNamespace, nil, nil, client.RangeOptions{ReadOptions: client.ReadOptions{Revision: out.FinalRev, Stale: true}})
				if err == nil {
					got = toMap(kvs)
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		mc.Close()
		if got != nil {
			out.Members[ep] = got
		} else {
			out.MemberErr[ep] = fmt.Sprint(err)
		}
	}
	return out, nil
}

func toMap(kvs []wire.KV) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

// --- watch ------------------------------------------------------------------------

const watchNamespace = "watchtest"

// watchEndKey is written after the writers stopped; its event marks the
// end of the stream.
const watchEndKey = "w/zz-end"

// watchEvent is one delivered event.
type watchEvent struct {
	Type  string `json:"t"`
	Key   string `json:"k"`
	Value string `json:"v,omitempty"`
	Rev   int64  `json:"rev"`
}

type watchOutput struct {
	StartRev int64          `json:"startRev"`
	EndRev   int64          `json:"endRev"`
	Writes   [][]crashWrite `json:"writes"`
	// Live are the events of the watch that ran during the faults; Replay
	// those of a watch opened afterwards from the same revision.
	Live     []watchEvent `json:"live"`
	Replay   []watchEvent `json:"replay"`
	LiveErr  string       `json:"liveErr,omitempty"`
	Resumes  int64        `json:"resumes"`
	Complete bool         `json:"complete"` // the live watch reached the end marker
}

// resumeCounter counts the client's "watch stream broke; resuming" debug
// messages: how often the live watch had to reconnect.
type resumeCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (h resumeCounter) Enabled(context.Context, slog.Level) bool { return true }

func (h resumeCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "resuming") {
		h.n.Add(1)
	}
	if r.Level >= slog.LevelInfo {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h resumeCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return resumeCounter{h.Handler.WithAttrs(as), h.n}
}

func (h resumeCounter) WithGroup(name string) slog.Handler {
	return resumeCounter{h.Handler.WithGroup(name), h.n}
}

// collect reads events from w until the end marker or ctx ends.
func collect(ctx context.Context, w *client.Watcher) (events []watchEvent, complete bool) {
	for {
		select {
		case <-ctx.Done():
			return events, false
		case ev, ok := <-w.Events():
			if !ok {
				return events, false
			}
			we := watchEvent{Type: "put", Key: string(ev.KV.Key), Value: string(ev.KV.Value), Rev: ev.KV.ModRevision}
			if ev.Type == wire.EventDelete {
				we.Type = "delete"
			}
			events = append(events, we)
			if we.Key == watchEndKey {
				return events, true
			}
		}
	}
}

func runWatchWorker(in workerInput, log *slog.Logger) (*watchOutput, error) {
	out := &watchOutput{Writes: make([][]crashWrite, in.Clients)}
	var resumes atomic.Int64
	wlog := slog.New(resumeCounter{log.Handler(), &resumes})
	// The watcher's client starts at the first endpoint (the test puts the
	// leader there), so killing the leader breaks its stream.
	wc, err := newClient(in, 0, wlog)
	if err != nil {
		return nil, err
	}
	defer wc.Close()
	c, err := newClient(in, 1, log)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), in.Duration+60*time.Second)
	defer cancel()
	out.StartRev, _, err = c.Revision(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("revision: %w", err)
	}
	w, err := wc.Watch(ctx, watchNamespace, []byte("w/"), out.StartRev+1)
	if err != nil {
		return nil, err
	}
	type result struct {
		events   []watchEvent
		complete bool
	}
	live := make(chan result, 1)
	go func() {
		ev, complete := collect(ctx, w)
		live <- result{ev, complete}
	}()

	deadline := time.Now().Add(in.Duration)
	var wg sync.WaitGroup
	ready()
	for i := range in.Clients {
		wg.Go(func() {
			key := fmt.Sprintf("w/%02d", i)
			for seq := 1; time.Now().Before(deadline); seq++ {
				cw := crashWrite{Key: key, Value: fmt.Sprintf("%06d", seq)}
				octx, ocancel := context.WithTimeout(ctx, opTimeout)
				rev, err := put(octx, c, watchNamespace, key, cw.Value)
				ocancel()
				switch {
				case err == nil:
					cw.Outcome, cw.Rev = "ok", rev
				case notApplied(err):
					cw.Outcome = "failed"
				default:
					cw.Outcome = "unknown"
				}
				out.Writes[i] = append(out.Writes[i], cw)
			}
		})
	}
	wg.Wait()
	for {
		out.EndRev, err = put(ctx, c, watchNamespace, watchEndKey, "end")
		if err == nil || ctx.Err() != nil {
			break
		}
		log.Info("end marker", "err", err)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("end marker: %w", err)
	}
	wait, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	var r result
	select {
	case r = <-live:
	case <-wait.Done():
		w.Close()
		r = <-live
	}
	out.Live, out.Complete = r.events, r.complete
	w.Close()
	if err := w.Err(); err != nil {
		out.LiveErr = err.Error()
	}
	out.Resumes = resumes.Load()

	rw, err := c.Watch(ctx, watchNamespace, []byte("w/"), out.StartRev+1)
	if err != nil {
		return nil, fmt.Errorf("replay watch: %w", err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	out.Replay, _ = collect(rctx, rw)
	rw.Close()
	return out, nil
}
