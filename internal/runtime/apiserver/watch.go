package apiserver

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// NDJSONContentType is the media type of watch streams: one api.Event per line.
const NDJSONContentType = "application/x-ndjson"

// watchWriteTimeout bounds how long one event may take to reach a client
// before the stream is dropped (the client resumes with since=).
const watchWriteTimeout = 30 * time.Second

// watch streams changes as newline-delimited api.Event values. Without
// since, it first sends every current item as ADDED, then changes after
// that snapshot; with since=N it sends every change after revision N, or
// fails with 410 revision_compacted when that history is gone.
//
// A restricted watch (the list of projects, or a cross-project watch, by a
// principal without cluster-wide permission) shows only objects of projects
// the principal may watch, decided per event, so granted and revoked access
// takes effect on an open stream. Every stream ends when the credential
// that opened it expires, so a resumed stream is authenticated afresh.
//
// A filtered watch (a label selector, a restricted watch, or a node
// principal on a node-bound kind) reports an object that stops matching as
// DELETED and one that starts matching as ADDED, so the client's view is
// exactly the matching objects (see transitions).
func (a *API) watch(w http.ResponseWriter, r *http.Request, t target, p listParams, restricted bool) {
	ctx := r.Context()
	node := confinedTo(ctx, t)
	visible := func(o *api.Object) bool {
		if !p.selector.Matches(labels.Set(o.Metadata.Labels)) {
			return false
		}
		if away, err := outOfReach(t, node, o); err != nil || away {
			return false
		}
		if !restricted {
			return true
		}
		at := t.attrs("watch")
		at.Project, at.Name = o.Metadata.Project, ""
		if t.k.isProjects() {
			at.Project = o.Metadata.Name
		}
		return a.decide(ctx, at) == Allow
	}
	var expired <-chan time.Time
	if pr, ok := PrincipalFrom(ctx); ok && !pr.ExpiresAt.IsZero() {
		tm := time.NewTimer(time.Until(pr.ExpiresAt))
		defer tm.Stop()
		expired = tm.C
	}
	prefix := t.listPrefix()
	var view *transitions
	if restricted || node != "" || !p.selector.Empty() {
		view = &transitions{state: map[string]bool{}, resumed: p.hasSince}
	}
	var initial []api.Object
	from := p.since + 1
	if !p.hasSince {
		kvs, rev, err := a.store.Range(ctx, []byte(prefix), prefixEnd([]byte(prefix)), 0)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		for _, kv := range kvs {
			o, err := objectFromKV(kv)
			if err != nil {
				a.fail(w, r, err)
				return
			}
			if visible(o) {
				initial = append(initial, *o)
				if view != nil {
					view.state[string(kv.Key)] = true
				}
			}
		}
		from = rev + 1
	}
	watcher, err := a.store.Watch(ctx, []byte(prefix), from)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer watcher.Close()

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", NDJSONContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	// complete is the highest revision whose events have all been sent:
	// events of one revision arrive one by one, so only a later revision
	// proves an earlier one complete. Bookmarks report it.
	complete := from - 1
	send := func(ev api.Event) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
		if err := enc.Encode(ev); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for i := range initial {
		if !send(api.Event{Type: api.EventAdded, Revision: initial[i].Metadata.Revision, Object: &initial[i]}) {
			return
		}
	}
	if !send(api.Event{Type: api.EventBookmark, Revision: complete}) {
		return
	}

	bookmark := time.NewTicker(a.opts.BookmarkInterval)
	defer bookmark.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.streams.Done():
			return
		case <-expired:
			return // the client resumes with a fresh credential
		case <-bookmark.C:
			if !send(api.Event{Type: api.EventBookmark, Revision: complete}) {
				return
			}
		case ev, ok := <-watcher.Events():
			if !ok {
				err := watcher.Err()
				if err == nil {
					return
				}
				if errors.Is(err, storage.ErrCompacted) {
					err = Errorf(http.StatusGone, api.CodeRevisionCompacted,
						"history after revision %d has been compacted: list again and watch from the list's revision", complete)
				}
				send(api.Event{Type: api.EventError, Revision: complete, Error: ToProblem(r, err)})
				return
			}
			out, err := eventFor(ev)
			if err != nil {
				send(api.Event{Type: api.EventError, Revision: complete, Error: ToProblem(r, err)})
				return
			}
			complete = max(complete, out.Revision-1)
			if view == nil {
				if !send(out) {
					return
				}
				continue
			}
			if !view.next(string(ev.KV.Key), &out, ev.Type == storage.EventDelete || !visible(out.Object)) {
				continue
			}
			if !send(out) {
				return
			}
		}
	}
}

// transitions is a filtered watch's memory of what its client sees, so
// that leaving the filter is reported as DELETED and entering it as ADDED.
// state maps a key to true when the client has the object and false when
// it is known not to; a key missing from state is one the client does not
// have on a fresh stream, and unknown on a resumed one (since=), where the
// client may hold objects from before the resume: there the first event of
// a key outside the filter is sent as DELETED once, which a client without
// the object ignores.
type transitions struct {
	state   map[string]bool
	resumed bool
}

// next adjusts ev (already typed from the store event) for a filtered
// stream, given whether the object is gone from the client's view (deleted
// or no longer matching), and reports whether to send it.
func (v *transitions) next(key string, ev *api.Event, gone bool) bool {
	has, known := v.state[key]
	if !known {
		has = v.resumed
	}
	if gone {
		if !has {
			return false
		}
		if v.resumed {
			v.state[key] = false
		} else {
			delete(v.state, key)
		}
		ev.Type = api.EventDeleted
		return true
	}
	v.state[key] = true
	if !has {
		ev.Type = api.EventAdded
	}
	return true
}

// eventFor turns a storage event into an API event.
func eventFor(ev storage.Event) (api.Event, error) {
	o, err := objectFromKV(ev.KV)
	if err != nil {
		return api.Event{}, err
	}
	typ := api.EventModified
	switch {
	case ev.Type == storage.EventDelete:
		typ = api.EventDeleted
	case ev.KV.CreateRevision == ev.KV.ModRevision:
		typ = api.EventAdded
	}
	return api.Event{Type: typ, Revision: ev.KV.ModRevision, Object: o}, nil
}
