package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// WatchOptions select what a watch delivers.
type WatchOptions struct {
	LabelSelector string
	// Since, when set, delivers every change after that revision (typically
	// a list's revision). When nil, the stream starts with every current item
	// as ADDED followed by a BOOKMARK, then changes.
	Since *int64
	// MaxBackoff caps the wait between reconnect attempts (default 5s).
	MaxBackoff time.Duration
}

// Watch is a running watch. Broken connections are resumed transparently
// from the last revision seen, so each change is delivered exactly once and
// in order. It ends when its context ends, Stop is called, or the server
// refuses to continue (e.g. history compacted): Events is then closed and
// Err says why.
type Watch struct {
	events chan api.Event
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error
}

// Events delivers the stream.
func (w *Watch) Events() <-chan api.Event { return w.events }

// Err is the reason the watch ended (nil if stopped or its context ended).
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Stop ends the watch and waits for it to finish.
func (w *Watch) Stop() {
	w.cancel()
	<-w.done
}

// Watch starts a watch. The first connection is made before Watch returns,
// so a bad request or compacted revision fails here.
func (r *Resources) Watch(ctx context.Context, o WatchOptions) (*Watch, error) {
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	resp, err := r.openWatch(ctx, o.LabelSelector, o.Since)
	if err != nil {
		cancel()
		return nil, err
	}
	w := &Watch{events: make(chan api.Event), cancel: cancel, done: make(chan struct{})}
	go w.loop(ctx, r, o, resp)
	return w, nil
}

func (r *Resources) openWatch(ctx context.Context, selector string, since *int64) (*http.Response, error) {
	q := url.Values{"watch": {"true"}}
	if selector != "" {
		q.Set("labelSelector", selector)
	}
	if since != nil {
		q.Set("since", strconv.FormatInt(*since, 10))
	}
	resp, err := r.c.send(ctx, func() (*http.Request, error) {
		req, err := r.c.newRequest(ctx, http.MethodGet, r.path(""), q, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/x-ndjson")
		return req, nil
	})
	if err != nil {
		return nil, fmt.Errorf("client: watch %s: %w", r.collection, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readProblem(resp)
	}
	return resp, nil
}

// resumeState tracks what has been delivered so a reconnect neither skips
// nor repeats: every revision below lastRev is complete; of lastRev itself,
// the objects in seen were delivered.
type resumeState struct {
	started bool
	lastRev int64
	seen    map[string]bool
}

func objKey(o *api.Object) string { return o.Metadata.Project + "/" + o.Metadata.Name }

func (w *Watch) loop(ctx context.Context, r *Resources, o WatchOptions, resp *http.Response) {
	defer close(w.done)
	defer close(w.events)
	defer w.cancel()
	st := resumeState{seen: map[string]bool{}}
	if o.Since != nil {
		st.started, st.lastRev = true, *o.Since
	}
	backoff := 100 * time.Millisecond
	for {
		err := w.consume(ctx, resp, &st)
		resp.Body.Close()
		if ctx.Err() != nil {
			return
		}
		var p *api.Problem
		if errors.As(err, &p) {
			w.fail(p)
			return
		}
		// The connection broke: resume after what was delivered.
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, o.MaxBackoff)
			var since *int64
			if st.started {
				s := st.lastRev
				if len(st.seen) > 0 {
					s-- // lastRev may be partly delivered: replay it, skipping seen
				}
				since = &s
			}
			resp, err = r.openWatch(ctx, o.LabelSelector, since)
			if err == nil {
				break
			}
			if errors.As(err, &p) && p.Status < 500 {
				w.fail(p)
				return
			}
		}
		backoff = 100 * time.Millisecond
	}
}

func (w *Watch) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// consume reads events until the stream ends. It returns a *api.Problem if
// the server ended the stream with an ERROR event.
func (w *Watch) consume(ctx context.Context, resp *http.Response, st *resumeState) error {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("client: malformed watch event: %w", err)
		}
		switch ev.Type {
		case api.EventError:
			if ev.Error != nil {
				return ev.Error
			}
			return &api.Problem{Status: http.StatusInternalServerError, Code: api.CodeInternal, Title: "watch failed"}
		case api.EventBookmark:
			// Every revision up to a bookmark's is complete.
			if !st.started || ev.Revision > st.lastRev {
				st.started, st.lastRev = true, ev.Revision
				st.seen = map[string]bool{}
			}
		default:
			if ev.Object == nil {
				continue
			}
			k := objKey(ev.Object)
			if !st.started {
				// Initial ADDED snapshot: not a position in the history.
			} else if ev.Revision < st.lastRev || (ev.Revision == st.lastRev && st.seen[k]) {
				continue // already delivered before a reconnect
			} else {
				if ev.Revision > st.lastRev {
					st.lastRev = ev.Revision
					st.seen = map[string]bool{}
				}
				st.seen[k] = true
			}
		}
		select {
		case w.events <- ev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("client: watch stream ended")
}
