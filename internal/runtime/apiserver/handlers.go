package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// maxUpdateRetries bounds read-modify-write retries of unconditional updates
// that race with other writers.
const maxUpdateRetries = 5

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	WriteError(w, r, a.log, err)
}

// attrs returns the authorization attributes of verb on t.
func (t target) attrs(verb string) Attributes {
	at := Attributes{Component: t.k.info.Component, Collection: t.k.info.Collection, Verb: verb, Project: t.project, Name: t.name}
	if t.k.isProjects() {
		at.Project = t.name // a project is inside itself
	}
	return at
}

// hidden is the 404 a target the principal may not know about reports: the
// same error a missing target gives.
func (t target) hidden() error {
	if t.name != "" {
		return notFound(t.k, t.project, t.name)
	}
	return Errorf(http.StatusNotFound, api.CodeNotFound, "project %q not found", t.project)
}

// authorize checks verb on t for the request's principal.
func (a *API) authorize(r *http.Request, t target, verb string) error {
	return a.Authorize(r.Context(), t.attrs(verb), t.hidden())
}

// confinedTo returns the node to which the request's principal is confined
// on t's kind: a node principal's node on a node-bound kind, else "".
func confinedTo(ctx context.Context, t target) string {
	if t.k.nodeOf == nil {
		return ""
	}
	p, _ := PrincipalFrom(ctx)
	return p.Node
}

// outOfReach reports whether o is bound to a node other than node, the one
// a principal is confined to ("" means not confined).
func outOfReach(t target, node string, o *api.Object) (bool, error) {
	if node == "" {
		return false, nil
	}
	n, err := t.k.nodeOf(o)
	if err != nil {
		return true, err
	}
	return n != node, nil
}

// readReachable is readCurrent for a principal that may be confined to a
// node: an object bound elsewhere is reported missing.
func (a *API) readReachable(ctx context.Context, t target, wantRev int64) (storage.KV, *api.Object, error) {
	kv, o, err := a.readCurrent(ctx, t, wantRev)
	if err != nil {
		return kv, o, err
	}
	if out, err := outOfReach(t, confinedTo(ctx, t), o); err != nil || out {
		if err == nil {
			err = notFound(t.k, t.project, t.name)
		}
		return kv, nil, err
	}
	return kv, o, nil
}

// afterWrite runs the kind's AfterWrite hook.
func (a *API) afterWrite(r *http.Request, t target, rev int64) {
	if t.k.afterWrite != nil {
		t.k.afterWrite(r.Context(), rev)
	}
}

func (a *API) handleGet(w http.ResponseWriter, r *http.Request) {
	t, err := a.resolve(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.authorize(r, t, "get"); err != nil {
		a.fail(w, r, err)
		return
	}
	kv, err := a.store.Get(r.Context(), t.key())
	if errors.Is(err, storage.ErrNotFound) {
		a.fail(w, r, notFound(t.k, t.project, t.name))
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := objectFromKV(kv)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if out, err := outOfReach(t, confinedTo(r.Context(), t), o); err != nil || out {
		if err == nil {
			err = notFound(t.k, t.project, t.name)
		}
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, o)
}

func (a *API) handleCreate(w http.ResponseWriter, r *http.Request) {
	t, err := a.resolve(r, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	denied := a.authorize(r, t, "create")
	p, _ := PrincipalFrom(r.Context())
	if denied != nil && !(t.k.selfRegistered && p.Node != "") {
		a.fail(w, r, denied)
		return
	}
	body, err := ReadBody(r, t.k.maxBody)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	meta, spec, err := t.k.decode(body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if denied != nil {
		// A node registering itself: only the object bound to its node.
		n, err := t.k.nodeOf(&api.Object{Metadata: meta, Spec: spec})
		if err != nil || n != p.Node {
			a.fail(w, r, denied)
			return
		}
	}
	if err := ValidateName("metadata.name", meta.Name); err != nil {
		a.fail(w, r, err)
		return
	}
	if meta.Project != "" && meta.Project != t.project {
		a.fail(w, r, FieldError("metadata.project", "project %q does not match the path's project %q", meta.Project, t.project))
		return
	}
	if err := validateLabels(meta.Labels); err != nil {
		a.fail(w, r, err)
		return
	}
	t.name = meta.Name
	AnnotateAudit(r.Context(), func(e *AuditEvent) { e.Name = meta.Name })
	status, err := t.k.initialStatus(spec)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.create(r, t, meta, spec, status)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusCreated, o)
}

// create writes a new object in one transaction with what the kind's
// OnCreate hook adds, running the hook again when a retryable
// precondition failed (its choice was taken meanwhile).
func (a *API) create(r *http.Request, t target, meta api.ObjectMeta, spec, status json.RawMessage) (*api.Object, error) {
	now := a.now()
	uid := a.opts.NewUID()
	key := t.key()
	for attempt := 0; ; attempt++ {
		hook := createHookResult{status: status, response: status}
		if t.k.onCreate != nil {
			var err error
			if hook, err = t.k.onCreate(r.Context(), t.project, meta.Name, uid, spec, status); err != nil {
				return nil, err
			}
		}
		o := &api.Object{
			Kind: t.k.info.Kind,
			Metadata: api.ObjectMeta{Name: meta.Name, Project: t.project, UID: uid,
				CreatedAt: now, UpdatedAt: now, Labels: meta.Labels},
			Spec:   spec,
			Status: hook.status,
		}
		val, err := encodeStored(o)
		if err != nil {
			return nil, err
		}
		txn := storage.Txn{
			If:   []storage.Compare{{Key: key, Target: storage.CompareMissing}},
			Then: append([]storage.Op{{Type: storage.OpPut, Key: key, Value: val}}, hook.ops...),
			Else: []storage.Op{{Type: storage.OpGet, Key: key}},
		}
		for _, p := range hook.require {
			txn.If = append(txn.If, p.Compare)
		}
		res, err := a.store.Txn(r.Context(), txn)
		if err != nil {
			return nil, err
		}
		if res.Succeeded {
			o.Metadata.Revision = res.Revision
			a.afterWrite(r, t, res.Revision)
			o.Status = hook.response
			return o, nil
		}
		if len(res.Results) == 1 && res.Results[0].Found {
			return nil, Errorf(http.StatusConflict, api.CodeAlreadyExists, "%s %q already exists; use update (PUT) to change it", t.k.info.Singular, t.name)
		}
		if again, err := a.failedPrecondition(r, hook.require); !again || attempt >= maxCreateRetries {
			return nil, err
		}
	}
}

// maxCreateRetries bounds how often a create whose retryable precondition
// failed runs its hook again.
const maxCreateRetries = 8

// failedPrecondition finds which of a write's preconditions failed and
// returns its error, and whether trying again may succeed: the failed
// precondition is marked Retry, or none fails any more (it changed back
// meanwhile).
func (a *API) failedPrecondition(r *http.Request, req []Precondition) (retry bool, err error) {
	for _, p := range req {
		res, err := a.store.Txn(r.Context(), storage.Txn{If: []storage.Compare{p.Compare}})
		if err != nil {
			return false, err
		}
		if !res.Succeeded {
			return p.Retry, p.Err
		}
	}
	return true, Errorf(http.StatusConflict, api.CodeConflict, "a resource this one depends on changed meanwhile; retry")
}

// handleUpdate replaces labels and spec. A non-zero metadata.revision makes
// it conditional (409 when stale); zero means "whatever is current". Status,
// UID and createdAt are kept. An update that changes nothing writes nothing.
func (a *API) handleUpdate(w http.ResponseWriter, r *http.Request) {
	a.replace(w, r, "update", func(k *kind, body []byte) (api.ObjectMeta, json.RawMessage, error) { return k.decode(body) },
		func(ctx context.Context, t target, meta api.ObjectMeta, spec json.RawMessage, cur *api.Object) (hookWrites, error) {
			if err := validateLabels(meta.Labels); err != nil {
				return hookWrites{}, err
			}
			if err := t.k.validateUpdate(cur.Spec, spec); err != nil {
				return hookWrites{}, err
			}
			var hw hookWrites
			if t.k.onUpdate != nil && !sameJSON(cur.Spec, spec) {
				var err error
				var status json.RawMessage
				if hw.ops, hw.require, status, err = t.k.onUpdate(ctx, cur, spec); err != nil {
					return hookWrites{}, err
				}
				cur.Status = status
			}
			cur.Metadata.Labels = meta.Labels
			cur.Spec = spec
			return hw, nil
		})
}

// hookWrites are the store operations and preconditions a kind's hook adds
// to a write.
type hookWrites struct {
	ops     []storage.Op
	require []Precondition
}

// handleStatus replaces only the status.
func (a *API) handleStatus(w http.ResponseWriter, r *http.Request) {
	a.replace(w, r, "updatestatus", func(k *kind, body []byte) (api.ObjectMeta, json.RawMessage, error) { return k.decodeStatus(body) },
		func(_ context.Context, t target, _ api.ObjectMeta, status json.RawMessage, cur *api.Object) (hookWrites, error) {
			if t.k.onStatusUpdate != nil {
				var err error
				if status, err = t.k.onStatusUpdate(cur.Status, status); err != nil {
					return hookWrites{}, err
				}
			}
			cur.Status = status
			return hookWrites{}, nil
		})
}

// replace serves a PUT: it decodes the body, checks that it names the
// resource of the path, and applies change to the stored object under
// compare-and-swap (see modify).
func (a *API) replace(w http.ResponseWriter, r *http.Request, verb string,
	decode func(*kind, []byte) (api.ObjectMeta, json.RawMessage, error),
	change func(ctx context.Context, t target, meta api.ObjectMeta, part json.RawMessage, cur *api.Object) (hookWrites, error)) {
	t, err := a.resolve(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.authorize(r, t, verb); err != nil {
		a.fail(w, r, err)
		return
	}
	body, err := ReadBody(r, t.k.maxBody)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	meta, part, err := decode(t.k, body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.checkIdentity(t, meta); err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.modify(r, t, meta.Revision, func(cur *api.Object) (hookWrites, error) { return change(r.Context(), t, meta, part, cur) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, o)
}

// checkIdentity rejects a body whose name or project disagrees with the path.
func (a *API) checkIdentity(t target, meta api.ObjectMeta) error {
	if meta.Name != "" && meta.Name != t.name {
		return FieldError("metadata.name", "name %q does not match the path's name %q (renaming is not supported)", meta.Name, t.name)
	}
	if meta.Project != "" && meta.Project != t.project {
		return FieldError("metadata.project", "project %q does not match the path's project %q", meta.Project, t.project)
	}
	return nil
}

// readCurrent reads t's stored object, failing with 404 when it is missing
// and with 409 when wantRev != 0 and the stored revision differs.
func (a *API) readCurrent(ctx context.Context, t target, wantRev int64) (storage.KV, *api.Object, error) {
	kv, err := a.store.Get(ctx, t.key())
	if errors.Is(err, storage.ErrNotFound) {
		return kv, nil, notFound(t.k, t.project, t.name)
	}
	if err != nil {
		return kv, nil, err
	}
	if wantRev != 0 && kv.ModRevision != wantRev {
		return kv, nil, staleRevision(t, wantRev, kv.ModRevision)
	}
	o, err := objectFromKV(kv)
	return kv, o, err
}

// modify applies change to the stored object under compare-and-swap. With
// wantRev != 0 the stored revision must equal it; otherwise it retries
// races a few times.
func (a *API) modify(r *http.Request, t target, wantRev int64, change func(*api.Object) (hookWrites, error)) (*api.Object, error) {
	ctx := r.Context()
	key := t.key()
	node := confinedTo(ctx, t)
	for attempt := 0; ; attempt++ {
		kv, cur, err := a.readReachable(ctx, t, wantRev)
		if err != nil {
			return nil, err
		}
		before, err := encodeStored(cur)
		if err != nil {
			return nil, err
		}
		hw, err := change(cur)
		if err != nil {
			return nil, err
		}
		if out, err := outOfReach(t, node, cur); err != nil {
			return nil, err
		} else if out {
			p, _ := PrincipalFrom(ctx)
			return nil, Errorf(http.StatusForbidden, api.CodeForbidden,
				"%s may not bind %s %q to another node", p.Name, t.k.info.Singular, t.name)
		}
		after, err := encodeStored(cur)
		if err != nil {
			return nil, err
		}
		if sameJSON(before, after) {
			return cur, nil // nothing changed: keep the revision, write nothing
		}
		cur.Metadata.UpdatedAt = a.now()
		val, err := encodeStored(cur)
		if err != nil {
			return nil, err
		}
		txn := storage.Txn{
			If:   []storage.Compare{{Key: key, Target: storage.CompareModRevision, Revision: kv.ModRevision}},
			Then: append([]storage.Op{{Type: storage.OpPut, Key: key, Value: val}}, hw.ops...),
			Else: []storage.Op{{Type: storage.OpGet, Key: key}},
		}
		for _, p := range hw.require {
			txn.If = append(txn.If, p.Compare)
		}
		res, err := a.store.Txn(ctx, txn)
		if err != nil {
			return nil, err
		}
		if res.Succeeded {
			cur.Metadata.Revision = res.Revision
			a.afterWrite(r, t, res.Revision)
			return cur, nil
		}
		if len(res.Results) == 1 && !res.Results[0].Found {
			return nil, notFound(t.k, t.project, t.name)
		}
		if res.Results[0].KV.ModRevision == kv.ModRevision {
			// The object is unchanged, so a hook's precondition failed.
			if again, err := a.failedPrecondition(r, hw.require); !again || attempt >= maxUpdateRetries {
				return nil, err
			}
			continue
		}
		if wantRev != 0 {
			return nil, staleRevision(t, wantRev, res.Results[0].KV.ModRevision)
		}
		if attempt >= maxUpdateRetries {
			return nil, Errorf(http.StatusConflict, api.CodeConflict, "%s %q is being changed by others; retry", t.k.info.Singular, t.name)
		}
	}
}

func staleRevision(t target, want, have int64) error {
	return Errorf(http.StatusConflict, api.CodeConflict,
		"%s %q has changed: you sent revision %d but it is now at %d; get it again, reapply your change and retry", t.k.info.Singular, t.name, want, have)
}

// handleDelete removes a resource and returns it as it was. The optional
// query parameter revision makes the delete conditional.
func (a *API) handleDelete(w http.ResponseWriter, r *http.Request) {
	t, err := a.resolve(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.authorize(r, t, "delete"); err != nil {
		a.fail(w, r, err)
		return
	}
	var wantRev int64
	if s := r.URL.Query().Get("revision"); s != "" {
		wantRev, err = strconv.ParseInt(s, 10, 64)
		if err != nil || wantRev <= 0 {
			a.fail(w, r, FieldError("revision", "revision %q must be a positive integer", s))
			return
		}
	}
	var o *api.Object
	if t.k.onDelete != nil || confinedTo(r.Context(), t) != "" {
		o, err = a.deleteWithHook(r, t, wantRev)
	} else {
		o, err = a.deleteSimple(r, t, wantRev)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.afterWrite(r, t, o.Metadata.Revision)
	WriteJSON(w, http.StatusOK, o)
}

// deleteSimple deletes in one transaction, for kinds without OnDelete.
func (a *API) deleteSimple(r *http.Request, t target, wantRev int64) (*api.Object, error) {
	key := t.key()
	txn := storage.Txn{
		If:   []storage.Compare{{Key: key, Target: storage.CompareExists}},
		Then: []storage.Op{{Type: storage.OpDelete, Key: key}},
		Else: []storage.Op{{Type: storage.OpGet, Key: key}},
	}
	if wantRev != 0 {
		txn.If = []storage.Compare{{Key: key, Target: storage.CompareModRevision, Revision: wantRev}}
	}
	res, err := a.store.Txn(r.Context(), txn)
	if err != nil {
		return nil, err
	}
	if !res.Succeeded {
		if len(res.Results) == 1 && res.Results[0].Found {
			return nil, staleRevision(t, wantRev, res.Results[0].KV.ModRevision)
		}
		return nil, notFound(t.k, t.project, t.name)
	}
	o, err := objectFromKV(res.Results[0].KV)
	if err != nil {
		return nil, err
	}
	o.Metadata.Revision = res.Revision
	return o, nil
}

// deleteWithHook reads the object, lets the kind's OnDelete hook (if any)
// add operations and preconditions, and deletes under compare-and-swap,
// retrying races. It also serves principals confined to a node, who may
// delete only what they can reach.
func (a *API) deleteWithHook(r *http.Request, t target, wantRev int64) (*api.Object, error) {
	ctx := r.Context()
	key := t.key()
	for attempt := 0; ; attempt++ {
		kv, o, err := a.readReachable(ctx, t, wantRev)
		if err != nil {
			return nil, err
		}
		var ops []storage.Op
		var require []Precondition
		if t.k.onDelete != nil {
			if ops, require, err = t.k.onDelete(ctx, o); err != nil {
				return nil, err
			}
		}
		txn := storage.Txn{
			If:   []storage.Compare{{Key: key, Target: storage.CompareModRevision, Revision: kv.ModRevision}},
			Then: append([]storage.Op{{Type: storage.OpDelete, Key: key}}, ops...),
			Else: []storage.Op{{Type: storage.OpGet, Key: key}},
		}
		for _, p := range require {
			txn.If = append(txn.If, p.Compare)
		}
		res, err := a.store.Txn(ctx, txn)
		if err != nil {
			return nil, err
		}
		if res.Succeeded {
			o.Metadata.Revision = res.Revision
			return o, nil
		}
		if len(res.Results) == 1 && !res.Results[0].Found {
			return nil, notFound(t.k, t.project, t.name)
		}
		if res.Results[0].KV.ModRevision == kv.ModRevision {
			// The object is unchanged, so a precondition failed.
			if again, err := a.failedPrecondition(r, require); !again || attempt >= maxUpdateRetries {
				return nil, err
			}
			continue
		}
		if wantRev != 0 {
			return nil, staleRevision(t, wantRev, res.Results[0].KV.ModRevision)
		}
		if attempt >= maxUpdateRetries {
			return nil, Errorf(http.StatusConflict, api.CodeConflict, "%s %q is being changed by others; retry", t.k.info.Singular, t.name)
		}
	}
}

// listParams are the parsed query parameters of a list or watch.
type listParams struct {
	limit    int
	after    string // relative position from the continue token
	selector labels.Selector
	watch    bool
	since    int64 // watch: deliver events after this revision
	hasSince bool
}

func (a *API) parseListParams(r *http.Request, crossProject bool) (listParams, error) {
	q := r.URL.Query()
	p := listParams{limit: a.opts.DefaultLimit, selector: labels.Everything()}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return p, FieldError("limit", "limit %q must be a positive integer", s)
		}
		if n > a.opts.MaxLimit {
			n = a.opts.MaxLimit
		}
		p.limit = n
	}
	if s := q.Get("continue"); s != "" {
		k, err := decodeContinue(s, crossProject)
		if err != nil {
			return p, err
		}
		p.after = k
	}
	if s := q.Get("labelSelector"); s != "" {
		sel, err := labels.Parse(s)
		if err != nil {
			return p, &Error{Status: http.StatusBadRequest, Code: api.CodeInvalidSelector, Field: "labelSelector",
				Detail: "label selector " + strconv.Quote(s) + " is invalid: " + err.Error() + ` (examples: "app=web", "tier in (a,b)", "!canary")`}
		}
		p.selector = sel
	}
	switch w := q.Get("watch"); w {
	case "", "false", "0":
	case "true", "1":
		p.watch = true
	default:
		return p, FieldError("watch", "watch %q must be true or false", w)
	}
	if s := q.Get("since"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return p, FieldError("since", "since %q must be a revision (a non-negative integer)", s)
		}
		p.since, p.hasSince = n, true
	}
	if p.hasSince && !p.watch {
		return p, FieldError("since", "since is only valid with watch=true")
	}
	return p, nil
}

// scanBudget bounds how many stored items one list page may examine when a
// selector filters most of them out; the page then ends early with a
// continue token.
const scanBudget = 10000

func (a *API) handleList(w http.ResponseWriter, r *http.Request) {
	t, err := a.resolve(r, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	crossProject := t.k.info.Scope == api.ScopeProject && t.project == ""
	p, err := a.parseListParams(r, crossProject)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	verb := "list"
	if p.watch {
		verb = "watch"
	}
	// A list inside one project, or of a cluster-scoped kind other than
	// projects, is allowed or not as a whole. The list of projects and
	// cross-project lists show what the principal may see.
	var only []string // nil: everything
	if crossProject || t.k.isProjects() {
		visible, all := a.visibleProjects(r.Context(), t.attrs(verb))
		if !all {
			only = visible
			if only == nil {
				only = []string{}
			}
		}
	} else if err := a.authorize(r, t, verb); err != nil {
		a.fail(w, r, err)
		return
	}
	if p.watch {
		a.watch(w, r, t, p, only != nil)
		return
	}
	list, err := a.list(r, t, p, only)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, list)
}

// span is one key range a list reads, in order.
type span struct{ start, end []byte }

// spans returns the key ranges of t's listing: the whole collection, or
// when only is non-nil just the given projects (their objects, for the
// projects kind; the items inside them, for cross-project lists).
func spans(t target, only []string) []span {
	prefix := t.listPrefix()
	if only == nil {
		return []span{{[]byte(prefix), prefixEnd([]byte(prefix))}}
	}
	out := make([]span, 0, len(only))
	for _, p := range only {
		if t.k.isProjects() {
			k := []byte(prefix + p)
			out = append(out, span{k, append(append([]byte(nil), k...), 0)})
			continue
		}
		pp := []byte(prefix + p + "/")
		out = append(out, span{pp, prefixEnd(pp)})
	}
	return out
}

// list reads one page: items strictly after p.after, in key order, from
// the spans of the listing. Continue tokens only ever name positions of
// items the principal may see, so they leak nothing either.
func (a *API) list(r *http.Request, t target, p listParams, only []string) (*api.List, error) {
	prefix := t.listPrefix()
	var after []byte
	if p.after != "" {
		after = []byte(prefix + p.after + "\x00")
	}
	out := &api.List{Kind: t.k.info.Kind + "List", Items: []api.Object{}}
	node := confinedTo(r.Context(), t)
	scanned := 0
	var lastRel string
	for _, sp := range spans(t, only) {
		start := sp.start
		if after != nil {
			if sp.end != nil && bytes.Compare(sp.end, after) <= 0 {
				continue
			}
			if bytes.Compare(start, after) < 0 {
				start = after
			}
		}
		for {
			chunk := p.limit - len(out.Items) + 1 // +1 to learn whether more follow
			if !p.selector.Empty() && chunk < 256 {
				chunk = 256
			}
			kvs, rev, err := a.store.Range(r.Context(), start, sp.end, chunk)
			if err != nil {
				return nil, err
			}
			if out.Metadata.Revision == 0 {
				out.Metadata.Revision = rev
			}
			for i, kv := range kvs {
				if len(out.Items) == p.limit {
					// kv exists beyond a full page: more follow.
					out.Metadata.Continue = encodeContinue(lastRel)
					return out, nil
				}
				lastRel = strings.TrimPrefix(string(kv.Key), prefix)
				scanned++
				o, err := objectFromKV(kv)
				if err != nil {
					return nil, err
				}
				if p.selector.Matches(labels.Set(o.Metadata.Labels)) {
					if away, err := outOfReach(t, node, o); err != nil {
						return nil, err
					} else if !away {
						out.Items = append(out.Items, *o)
					}
				}
				if scanned >= scanBudget && i < len(kvs)-1 {
					out.Metadata.Continue = encodeContinue(lastRel)
					return out, nil
				}
			}
			if len(kvs) < chunk {
				break // reached the end of this span
			}
			start = append([]byte(prefix+lastRel), 0)
		}
	}
	if out.Metadata.Revision == 0 { // no span was read
		rev, _, err := a.store.Revision(r.Context())
		if err != nil {
			return nil, err
		}
		out.Metadata.Revision = rev
	}
	return out, nil
}

// prefixEnd returns the smallest key greater than every key with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
