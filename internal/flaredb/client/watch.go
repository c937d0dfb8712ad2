package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// watchChanSize is the buffer of a watch's event channel.
const watchChanSize = 256

// watchStream is one open watch response.
type watchStream struct {
	body io.ReadCloser
	br   *bufio.Reader
}

func (s *watchStream) close() { s.body.Close() }

func (s *watchStream) next() (*wire.WatchFrame, error) {
	body, err := wire.ReadFrame(s.br, wire.MaxFrameBytes)
	if err != nil {
		return nil, err
	}
	var f wire.WatchFrame
	if err := f.Decode(body); err != nil {
		return nil, err
	}
	return &f, nil
}

// openWatch opens a watch from rev on some member. It returns the stream
// positioned after the start frame and the revision the start frame
// confirmed (from-1). Errors the member answers (ErrCompacted,
// ErrFutureRev) are returned at once.
func (c *Client) openWatch(ctx context.Context, ns string, prefix []byte, from int64) (*watchStream, int64, error) {
	body := (&wire.WatchRequest{Namespace: ns, Prefix: prefix, FromRevision: from}).Encode()
	backoff := 10 * time.Millisecond
	var lastErr error
	for attempt := 0; ; attempt++ {
		for _, ep := range c.order(false) {
			s, start, err := c.tryWatch(ctx, ep, body)
			if err == nil {
				return s, start, nil
			}
			lastErr = err
			var we *wire.Error
			if errors.As(err, &we) && !wire.RetryableRead(we.Code) {
				return nil, 0, err
			}
			if ctx.Err() != nil {
				return nil, 0, c.timeoutErr(ctx, lastErr)
			}
		}
		if attempt == 0 {
			c.discover(ctx)
		}
		select {
		case <-ctx.Done():
			return nil, 0, c.timeoutErr(ctx, lastErr)
		case <-c.root.Done():
			return nil, 0, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func (c *Client) tryWatch(ctx context.Context, ep string, body []byte) (*watchStream, int64, error) {
	var stream io.ReadCloser
	if c.cfg.LocalWatch != nil && ep == c.cfg.LocalEndpoint {
		rc, err := c.cfg.LocalWatch(ctx, body)
		if err != nil {
			return nil, 0, wire.ToError(err)
		}
		stream = rc
	} else {
		resp, err := c.post(ctx, ep, wire.PathWatch, body)
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			return nil, 0, responseError(ep, resp, out)
		}
		stream = resp.Body
	}
	s := &watchStream{body: stream, br: bufio.NewReaderSize(stream, 64<<10)}
	f, err := s.next()
	if err != nil {
		s.close()
		return nil, 0, err
	}
	if f.Kind != wire.FrameProgress {
		s.close()
		return nil, 0, fmt.Errorf("%w: watch from %s started with frame kind %d", wire.ErrMalformed, ep, f.Kind)
	}
	return s, f.Revision, nil
}

// watchLoop runs one watch: it delivers every change under prefix from
// next on, each revision once and whole, reconnecting to another member
// (from the first revision not yet delivered) when a stream breaks. emit
// returns false to stop. It returns nil when ctx ends.
func (c *Client) watchLoop(ctx context.Context, s *watchStream, ns string, prefix []byte, next int64, emit func(wire.Event) bool) error {
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	var pending []wire.Event
	pendingRev := int64(0)
	for {
		if s == nil {
			var start int64
			var err error
			s, start, err = c.openWatch(ctx, ns, prefix, next)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, ErrClosed) {
					return nil
				}
				return err
			}
			if start+1 != next {
				s.close()
				s = nil
				return fmt.Errorf("%w: resumed watch at %d, member started at %d", wire.ErrInternal, next, start+1)
			}
		}
		f, err := s.next()
		if err != nil {
			s.close()
			s = nil
			pending, pendingRev = pending[:0], 0
			if ctx.Err() != nil {
				return nil
			}
			c.log.Debug("watch stream broke; resuming", "namespace", ns, "next", next, "err", err)
			continue
		}
		switch f.Kind {
		case wire.FrameEvents:
			if f.Revision < next || (pendingRev != 0 && f.Revision != pendingRev) {
				return fmt.Errorf("%w: watch frame for revision %d, expected %d", wire.ErrInternal, f.Revision, next)
			}
			pendingRev = f.Revision
			pending = append(pending, f.Events...)
			if f.Complete {
				for _, ev := range pending {
					if !emit(ev) {
						return nil
					}
				}
				next = pendingRev + 1
				clear(pending)
				pending, pendingRev = pending[:0], 0
			}
		case wire.FrameProgress:
			if pendingRev == 0 && f.Revision+1 > next {
				next = f.Revision + 1
			}
		case wire.FrameError:
			if f.Err != nil && wire.Retryable(f.Err.Code) {
				s.close()
				s = nil
				continue
			}
			return f.Err
		}
	}
}

// Watcher is a resumable watch of one prefix in one namespace. It delivers
// every change in revision order, each exactly once, across member failures
// and leader changes.
type Watcher = watcherOf[wire.Event]

// watcherOf is a watch delivering events of type E.
type watcherOf[E any] struct {
	ch     chan E
	cancel context.CancelFunc
	done   chan struct{}
	err    atomic.Pointer[error]
}

// Events is closed when the watch ends; Err then says why.
func (w *watcherOf[E]) Events() <-chan E { return w.ch }

// Err is nil while Events is open and after a clean end (context ended,
// Close, client closed); otherwise the error that ended the watch.
func (w *watcherOf[E]) Err() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Close ends the watch and waits for its goroutine. It is safe to call
// more than once.
func (w *watcherOf[E]) Close() {
	w.cancel()
	<-w.done
}

// Watch streams changes to keys under prefix in namespace ns with revision
// >= from (0: changes after now). It fails at once with storage.ErrCompacted
// or storage.ErrFutureRev when from is out of range.
func (c *Client) Watch(ctx context.Context, ns string, prefix []byte, from int64) (*Watcher, error) {
	ch := make(chan wire.Event, watchChanSize)
	return startWatch(c, ctx, ns, prefix, from, ch, func(ev wire.Event) wire.Event { return ev }, nil, nil)
}

// startWatch opens the watch and runs its loop in a goroutine the client
// (and group, if set) waits for; conv maps events onto the channel's type;
// cleanup, if set, runs when the watch ends.
func startWatch[E any](c *Client, ctx context.Context, ns string, prefix []byte, from int64, ch chan E,
	conv func(wire.Event) E, group *sync.WaitGroup, cleanup func()) (*watcherOf[E], error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(c.root, cancel)
	octx, ocancel := c.withTimeout(wctx)
	s, start, err := c.openWatch(octx, ns, prefix, from)
	ocancel()
	if err != nil {
		stopOnClose()
		cancel()
		if cleanup != nil {
			cleanup()
		}
		if c.closed.Load() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("flaredb: watch: %w", err)
	}
	w := &watcherOf[E]{ch: ch, cancel: cancel, done: make(chan struct{})}
	c.watches.Add(1)
	if group != nil {
		group.Add(1)
	}
	go func() {
		defer c.watches.Done()
		if group != nil {
			defer group.Done()
		}
		if cleanup != nil {
			defer cleanup()
		}
		defer close(w.done)
		defer close(ch)
		defer stopOnClose()
		defer cancel()
		err := c.watchLoop(wctx, s, ns, prefix, start+1, func(ev wire.Event) bool {
			select {
			case ch <- conv(ev):
				return true
			case <-wctx.Done():
				return false
			}
		})
		if err != nil && wctx.Err() == nil {
			err = fmt.Errorf("flaredb: watch: %w", err)
			w.err.Store(&err)
		}
	}()
	return w, nil
}
