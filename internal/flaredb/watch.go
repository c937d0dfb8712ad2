package flaredb

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

const (
	// watchFrameBytes bounds the events in one frame; a revision with more
	// spans several frames.
	watchFrameBytes = 4 << 20
	// progressInterval is how often an idle watch reports how far it got.
	progressInterval = time.Second
)

// handleWatch streams the changes under a prefix from a revision. Any member
// serves watches from its own state machine: every member applies the same
// log, so the stream is the same wherever it is served. The start is checked
// after a read index (so "now", ErrCompacted and ErrFutureRev are judged
// against the cluster's state, not a lagging member's). The first frame is a
// progress frame (from-1) telling the client the watch started.
func (n *node) handleWatch(w http.ResponseWriter, r *http.Request) {
	body, ok := n.prelude(w, r)
	if !ok {
		return
	}
	req, from, err := n.startWatch(r.Context(), body)
	if err != nil {
		n.writeError(w, err)
		return
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", wire.ContentType)
	w.WriteHeader(http.StatusOK)
	n.runWatch(r.Context(), &watchStream{w: w, flusher: flusher}, &req, from)
}

// startWatch decodes a watch request and settles where it starts, after a
// read index so the start is judged against the cluster.
func (n *node) startWatch(ctx context.Context, body []byte) (wire.WatchRequest, int64, error) {
	var req wire.WatchRequest
	if err := req.Decode(body); err != nil {
		return req, 0, err
	}
	lctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	err := n.linearize(lctx)
	cancel()
	if err != nil {
		return req, 0, err
	}
	cur, comp := n.fsm.Revision()
	from := req.FromRevision
	switch {
	case from == 0:
		from = cur + 1
	case from <= comp:
		return req, 0, fmt.Errorf("flaredb: watch from %d (compacted %d): %w", from, comp, storage.ErrCompacted)
	case from > cur+1:
		return req, 0, fmt.Errorf("flaredb: watch from %d (current %d): %w", from, cur, storage.ErrFutureRev)
	}
	return req, from, nil
}

// runWatch sends the start frame (the revision before from) and streams.
func (n *node) runWatch(ctx context.Context, ws *watchStream, req *wire.WatchRequest, from int64) {
	if !ws.send(&wire.WatchFrame{Kind: wire.FrameProgress, Revision: from - 1}) || !ws.flush() {
		return
	}
	n.streamWatch(ctx, ws, req.Namespace, wire.RawKey(req.Namespace, req.Prefix), from)
}

type watchStream struct {
	w       io.Writer
	flusher http.Flusher // nil in-process
	buf     []byte
}

func (s *watchStream) send(f *wire.WatchFrame) bool {
	s.buf = wire.AppendFrame(s.buf[:0], f.Encode())
	_, err := s.w.Write(s.buf)
	return err == nil
}

func (s *watchStream) flush() bool {
	if s.flusher != nil {
		s.flusher.Flush()
	}
	return true
}

func (n *node) streamWatch(ctx context.Context, ws *watchStream, ns string, prefix []byte, next int64) {
	reported := next - 1 // highest revision the client knows is complete
	var progress <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		_, wake := n.fsm.Notify()
		cur, _ := n.fsm.Revision()
		for next <= cur {
			entries, err := n.fsm.ReadLog(next, cur)
			if err != nil {
				ws.send(&wire.WatchFrame{Kind: wire.FrameError, Err: wire.ToError(err)})
				ws.flush()
				return
			}
			for i := range entries {
				e := &entries[i]
				evs := e.Events(prefix)
				if len(evs) > 0 {
					if !n.sendEvents(ws, ns, e.Rev, evs) {
						return
					}
					reported = e.Rev
				}
				next = e.Rev + 1
			}
			ws.flush()
			if ctx.Err() != nil || n.streams.Err() != nil {
				return
			}
		}
		if next-1 > reported && progress == nil {
			if timer == nil {
				timer = time.NewTimer(progressInterval)
			} else {
				timer.Reset(progressInterval)
			}
			progress = timer.C
		}
		select {
		case <-wake:
		case <-progress:
			progress = nil
			if next-1 > reported {
				if !ws.send(&wire.WatchFrame{Kind: wire.FrameProgress, Revision: next - 1}) {
					return
				}
				ws.flush()
				reported = next - 1
			}
		case <-ctx.Done():
			return
		case <-n.streams.Done():
			return
		case <-n.fsm.Failed():
			ws.send(&wire.WatchFrame{Kind: wire.FrameError, Err: wire.ToError(n.fsm.Err())})
			ws.flush()
			return
		}
	}
}

// sendEvents writes one revision's events, split into frames of bounded
// size; the last carries Complete.
func (n *node) sendEvents(ws *watchStream, ns string, rev int64, evs []wire.Event) bool {
	for i := range evs {
		stripKV(ns, &evs[i].KV)
	}
	for len(evs) > 0 {
		size, j := 0, 0
		for j < len(evs) && (j == 0 || size < watchFrameBytes) {
			size += len(evs[j].KV.Key) + len(evs[j].KV.Value) + 32
			j++
		}
		f := &wire.WatchFrame{Kind: wire.FrameEvents, Revision: rev, Complete: j == len(evs), Events: evs[:j]}
		if !ws.send(f) {
			return false
		}
		evs = evs[j:]
	}
	return true
}
