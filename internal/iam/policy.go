package iam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// ErrRevoked is the cause of a 401 for a token whose principal or access
// key no longer exists or is disabled.
var ErrRevoked = errors.New("iam: credential revoked")

// policyCollections are the collections the policy mirrors. Roles and
// bindings make up the decision snapshot; principals, access keys and
// projects are mirrored in place (see Policy).
var policyCollections = []string{
	iamv1.ProjectCollection, iamv1.UserCollection, iamv1.ServiceAccountCollection, iamv1.RoleCollection,
	iamv1.RoleBindingCollection, iamv1.ClusterRoleBindingCollection, iamv1.AccessKeyCollection,
	iamv1.NodeCredentialCollection,
}

// snapshotCollections are the collections whose changes rebuild the
// snapshot (and so drop every cached decision).
func snapshotCollection(coll string) bool {
	return coll == iamv1.RoleCollection || coll == iamv1.RoleBindingCollection || coll == iamv1.ClusterRoleBindingCollection
}

// Policy mirrors iam's policy objects from the store into memory and
// answers authorization questions from that mirror. It implements
// apiserver.Authorizer: deny by default; decisions are cached per
// (principal, permission, project) for a short TTL, and the cache is
// dropped whenever something a decision depends on changes, so a change
// takes effect as soon as the watch delivers it.
//
// Roles and bindings form an immutable snapshot, rebuilt on each batch of
// their changes (cost: the size of those collections). Users, service
// accounts, access keys and projects, which change far more often and do
// not change what a binding grants, are kept in concurrent maps updated in
// place: a new project or user costs a map store, not a rebuild. Projects
// matter to decisions only through bindings (a binding counts only in the
// project it was made for), so a project event drops cached decisions only
// when some binding names that project.
type Policy struct {
	store storage.Store
	log   *slog.Logger
	now   func() time.Time
	ttl   time.Duration

	mu       sync.Mutex
	system   map[string][]string               // system principal -> patterns (iam's and other components')
	raw      map[string]map[string]*api.Object // roles and bindings: collection -> rel key -> object
	progress map[string]int64                  // collection -> revision applied
	changed  chan struct{}                     // closed and replaced on every change
	snap     atomic.Pointer[snapshot]

	projects atomic.Pointer[sync.Map] // name -> createdAt (time.Time)
	users    atomic.Pointer[sync.Map] // name -> principalState
	sas      atomic.Pointer[sync.Map] // "project/name" -> principalState
	keys     atomic.Pointer[sync.Map] // access key ID -> enabled (bool)
	nodes    atomic.Pointer[sync.Map] // node name -> principalState (disabled: not enrolled)
}

var _ apiserver.Authorizer = (*Policy)(nil)

// NewPolicy returns a policy over store; Load and Follow fill it.
// cacheTTL bounds how long a cached decision lives (10s if 0).
func NewPolicy(store storage.Store, log *slog.Logger, now func() time.Time, cacheTTL time.Duration) *Policy {
	if cacheTTL <= 0 {
		cacheTTL = 10 * time.Second
	}
	p := &Policy{store: store, log: log, now: now, ttl: cacheTTL, raw: map[string]map[string]*api.Object{},
		progress: map[string]int64{}, changed: make(chan struct{}), system: systemGrants}
	p.snap.Store(buildSnapshot(p.raw, p.system))
	for _, m := range []*atomic.Pointer[sync.Map]{&p.projects, &p.users, &p.sas, &p.keys, &p.nodes} {
		m.Store(&sync.Map{})
	}
	return p
}

// mirror returns the in-place map of a non-snapshot collection.
func (p *Policy) mirror(coll string) *atomic.Pointer[sync.Map] {
	switch coll {
	case iamv1.ProjectCollection:
		return &p.projects
	case iamv1.UserCollection:
		return &p.users
	case iamv1.ServiceAccountCollection:
		return &p.sas
	case iamv1.NodeCredentialCollection:
		return &p.nodes
	}
	return &p.keys
}

// Load reads every policy collection; call it before serving, then Follow.
func (p *Policy) Load(ctx context.Context) (map[string]int64, error) {
	revs := map[string]int64{}
	for _, c := range policyCollections {
		rev, err := p.loadCollection(ctx, c)
		if err != nil {
			return nil, err
		}
		revs[c] = rev
	}
	return revs, nil
}

// loadCollection reads one collection in full and replaces its mirror.
func (p *Policy) loadCollection(ctx context.Context, coll string) (int64, error) {
	prefix := apiserver.CollectionPrefix(coll)
	kvs, rev, err := p.store.Range(ctx, []byte(prefix), prefixEnd(prefix), 0)
	if err != nil {
		return 0, fmt.Errorf("iam: loading %s: %w", coll, err)
	}
	objs := make(map[string]*api.Object, len(kvs))
	for _, kv := range kvs {
		o, err := apiserver.DecodeObject(kv)
		if err != nil {
			return 0, fmt.Errorf("iam: loading %s: %w", coll, err)
		}
		objs[strings.TrimPrefix(string(kv.Key), prefix)] = o
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if snapshotCollection(coll) {
		p.raw[coll] = objs
		p.rebuildLocked()
	} else {
		m := &sync.Map{}
		for rel, o := range objs {
			p.putMirrored(m, coll, rel, o)
		}
		p.mirror(coll).Store(m)
		p.flushLocked()
	}
	p.progress[coll] = max(p.progress[coll], rev)
	return rev, nil
}

// putMirrored stores the part of o the policy needs.
func (p *Policy) putMirrored(m *sync.Map, coll, rel string, o *api.Object) {
	switch coll {
	case iamv1.ProjectCollection:
		if o.Metadata.CreatedAt != nil {
			m.Store(rel, *o.Metadata.CreatedAt)
		}
	case iamv1.UserCollection:
		spec, _ := decodeSpec[iamv1.UserSpec](o)
		m.Store(rel, principalState{uid: o.Metadata.UID, disabled: spec.Disabled})
	case iamv1.ServiceAccountCollection:
		spec, _ := decodeSpec[iamv1.ServiceAccountSpec](o)
		m.Store(rel, principalState{uid: o.Metadata.UID, disabled: spec.Disabled})
	case iamv1.AccessKeyCollection:
		if id := accessKeyIDOf(o); id != "" {
			spec, _ := decodeSpec[iamv1.AccessKeySpec](o)
			m.Store(id, !spec.Disabled)
		}
	case iamv1.NodeCredentialCollection:
		var st iamv1.NodeCredentialStatus
		if len(o.Status) > 0 {
			_ = json.Unmarshal(o.Status, &st)
		}
		m.Store(rel, principalState{uid: o.Metadata.UID, disabled: st.Phase != iamv1.NodeCredentialEnrolled})
	}
}

// deleteMirrored removes a deleted object (o is its last state).
func (p *Policy) deleteMirrored(m *sync.Map, coll, rel string, o *api.Object) {
	if coll == iamv1.AccessKeyCollection {
		if id := accessKeyIDOf(o); id != "" {
			m.Delete(id)
		}
		return
	}
	m.Delete(rel)
}

func accessKeyIDOf(o *api.Object) string {
	var st iamv1.AccessKeyStatus
	if len(o.Status) > 0 && json.Unmarshal(o.Status, &st) == nil {
		return st.AccessKeyID
	}
	return ""
}

// Follow watches every policy collection from the revisions Load returned
// until ctx ends, reloading a collection whose watch fails.
func (p *Policy) Follow(ctx context.Context, revs map[string]int64) error {
	var wg sync.WaitGroup
	for _, c := range policyCollections {
		wg.Go(func() { p.follow(ctx, c, revs[c]) })
	}
	wg.Wait()
	return nil
}

func (p *Policy) follow(ctx context.Context, coll string, rev int64) {
	prefix := apiserver.CollectionPrefix(coll)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := p.watch(ctx, coll, prefix, rev)
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("iam policy watch ended; reloading", "collection", coll, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		if r, err := p.loadCollection(ctx, coll); err == nil {
			rev = r
			backoff = 100 * time.Millisecond
		}
	}
}

func (p *Policy) watch(ctx context.Context, coll, prefix string, rev int64) error {
	w, err := p.store.Watch(ctx, []byte(prefix), rev+1)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events():
			if !ok {
				if err := w.Err(); err != nil {
					return err
				}
				return errors.New("iam: watch closed")
			}
			batch := []storage.Event{ev}
		drain:
			for len(batch) < 512 {
				select {
				case ev, ok := <-w.Events():
					if !ok {
						break drain
					}
					batch = append(batch, ev)
				default:
					break drain
				}
			}
			if err := p.apply(coll, prefix, batch); err != nil {
				return err
			}
		}
	}
}

func (p *Policy) apply(coll, prefix string, evs []storage.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	rev := p.progress[coll]
	snap := snapshotCollection(coll)
	objs := p.raw[coll]
	if snap && objs == nil {
		objs = map[string]*api.Object{}
		p.raw[coll] = objs
	}
	m := p.mirror(coll).Load()
	flush := false
	for _, ev := range evs {
		rel := strings.TrimPrefix(string(ev.KV.Key), prefix)
		o, err := apiserver.DecodeObject(ev.KV)
		if err != nil {
			return err
		}
		switch {
		case snap && ev.Type == storage.EventDelete:
			delete(objs, rel)
		case snap:
			objs[rel] = o
		case ev.Type == storage.EventDelete:
			p.deleteMirrored(m, coll, rel, o)
		default:
			p.putMirrored(m, coll, rel, o)
		}
		if coll == iamv1.ProjectCollection && p.snap.Load().bindingProjects[rel] {
			flush = true
		}
		rev = max(rev, ev.KV.ModRevision)
	}
	// The snapshot first, then the progress: a writer waiting in WaitFor
	// must find its change in effect once progress shows it.
	switch {
	case snap:
		p.rebuildLocked()
	case flush:
		p.flushLocked()
	default:
		p.wakeLocked()
	}
	p.progress[coll] = rev
	return nil
}

// rebuildLocked derives a fresh snapshot (with an empty decision cache)
// from the roles and bindings and wakes waiters.
func (p *Policy) rebuildLocked() {
	p.snap.Store(buildSnapshot(p.raw, p.system))
	p.wakeLocked()
}

// SetSystemGrants adds other components' system principals (Module.
// SystemGrants) to iam's own. Every principal must be "system:NAME" and
// every pattern valid; iam's own principals cannot be redefined.
func (p *Policy) SetSystemGrants(grants map[string][]string) error {
	merged := maps.Clone(systemGrants)
	for principal, pats := range grants {
		name, ok := strings.CutPrefix(principal, iamv1.PrincipalSystem+":")
		if !ok || apiserver.ValidateName("system principal", name) != nil {
			return fmt.Errorf("iam: system grant for %q: a system principal is system:NAME with NAME a DNS label", principal)
		}
		if _, own := systemGrants[principal]; own && !slices.Equal(systemGrants[principal], pats) {
			return fmt.Errorf("iam: system grant for %q: that principal is iam's own", principal)
		}
		if _, err := ParseRules(pats); err != nil {
			return fmt.Errorf("iam: system grant for %q: %w", principal, err)
		}
		merged[principal] = slices.Clone(pats)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.system = merged
	p.rebuildLocked()
	return nil
}

// isSystem reports whether principal is a known system principal.
func (p *Policy) isSystem(principal string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.system[principal]
	return ok
}

// flushLocked drops every cached decision, keeping the snapshot.
func (p *Policy) flushLocked() {
	s := *p.snap.Load()
	s.cache = &decisionCache{}
	p.snap.Store(&s)
	p.wakeLocked()
}

func (p *Policy) wakeLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// WaitFor waits until the policy reflects coll at revision rev, up to
// timeout, so a client that just changed a role or binding sees the change
// on its next request. It gives up silently: the change then shows up
// moments later.
func (p *Policy) WaitFor(ctx context.Context, coll string, rev int64, timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		p.mu.Lock()
		done, ch := p.progress[coll] >= rev, p.changed
		p.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			p.log.Warn("iam policy did not catch up with a write in time", "collection", coll, "revision", rev)
			return
		case <-ctx.Done():
			return
		}
	}
}

// grant is one binding of a role in a project.
type grant struct {
	role    string
	created time.Time // the binding's creation
}

// snapshot is an immutable view of roles and bindings.
type snapshot struct {
	roles           map[string]Rules              // built-in and custom
	cluster         map[string][]string           // principal -> roles bound cluster-wide
	project         map[string]map[string][]grant // principal -> project -> grants
	projects        map[string][]string           // principal -> sorted projects with bindings
	bindingProjects map[string]bool               // projects some binding names
	system          map[string]Rules              // built-in system principals
	node            Rules                         // every node principal
	cache           *decisionCache
}

type principalState struct {
	uid      string
	disabled bool
}

func decodeSpec[S any](o *api.Object) (S, bool) {
	var s S
	if len(o.Spec) == 0 {
		return s, true
	}
	return s, json.Unmarshal(o.Spec, &s) == nil
}

func buildSnapshot(raw map[string]map[string]*api.Object, system map[string][]string) *snapshot {
	s := &snapshot{roles: map[string]Rules{}, cluster: map[string][]string{}, project: map[string]map[string][]grant{},
		projects: map[string][]string{}, bindingProjects: map[string]bool{}, system: map[string]Rules{}, cache: &decisionCache{}}
	for name, pats := range builtinRoles {
		r, _ := ParseRules(pats)
		s.roles[name] = r
	}
	for name, pats := range system {
		r, _ := ParseRules(pats)
		s.system[name] = r
	}
	s.node, _ = ParseRules(nodeRole)
	for name, o := range raw[iamv1.RoleCollection] {
		if _, builtin := builtinRoles[name]; builtin {
			continue
		}
		spec, ok := decodeSpec[iamv1.RoleSpec](o)
		if !ok {
			continue
		}
		if r, err := ParseRules(spec.Permissions); err == nil {
			s.roles[name] = r
		}
	}
	for _, o := range raw[iamv1.ClusterRoleBindingCollection] {
		if spec, ok := decodeSpec[iamv1.RoleBindingSpec](o); ok {
			s.cluster[spec.Principal] = append(s.cluster[spec.Principal], spec.Role)
		}
	}
	for _, o := range raw[iamv1.RoleBindingCollection] {
		spec, ok := decodeSpec[iamv1.RoleBindingSpec](o)
		if !ok || o.Metadata.CreatedAt == nil {
			continue
		}
		proj := o.Metadata.Project
		byProject := s.project[spec.Principal]
		if byProject == nil {
			byProject = map[string][]grant{}
			s.project[spec.Principal] = byProject
		}
		byProject[proj] = append(byProject[proj], grant{role: spec.Role, created: *o.Metadata.CreatedAt})
		s.bindingProjects[proj] = true
	}
	for principal, byProject := range s.project {
		list := make([]string, 0, len(byProject))
		for proj := range byProject {
			list = append(list, proj)
		}
		sort.Strings(list)
		s.projects[principal] = list
	}
	return s
}

// decisionCache holds decisions of one snapshot.
type decisionCache struct {
	m sync.Map // decisionKey -> decisionEntry
	n atomic.Int64
}

type decisionKey struct{ principal, component, collection, verb, project string }

type decisionEntry struct {
	d   apiserver.Decision
	exp int64 // unix nanoseconds
}

// maxCachedDecisions bounds one snapshot's cache; beyond it decisions are
// computed but not kept.
const maxCachedDecisions = 1 << 16

// Authorize implements apiserver.Authorizer.
func (p *Policy) Authorize(_ context.Context, pr apiserver.Principal, at apiserver.Attributes) apiserver.Decision {
	if pr.Superuser {
		return apiserver.Allow
	}
	// Users may read their own User object.
	if at.Component == "iam" && at.Collection == iamv1.UserCollection && at.Verb == "get" && at.Name != "" &&
		pr.Name == iamv1.UserPrincipal(at.Name) {
		return apiserver.Allow
	}
	s := p.snap.Load()
	key := decisionKey{pr.Name, at.Component, at.Collection, at.Verb, at.Project}
	now := p.now().UnixNano()
	if v, ok := s.cache.m.Load(key); ok {
		if e := v.(decisionEntry); now < e.exp {
			return e.d
		}
	}
	d := p.evaluate(s, pr.Name, at.Component, at.Collection, at.Verb, at.Project)
	if s.cache.n.Load() < maxCachedDecisions {
		if _, loaded := s.cache.m.Swap(key, decisionEntry{d: d, exp: now + int64(p.ttl)}); !loaded {
			s.cache.n.Add(1)
		}
	}
	return d
}

// grants returns the roles principal holds in project: bindings made
// there, for the project as it exists now (not for a deleted project, nor
// one deleted and recreated since the binding was made).
func (p *Policy) grants(s *snapshot, principal, project string) []string {
	gs := s.project[principal][project]
	if len(gs) == 0 {
		return nil
	}
	v, ok := p.projects.Load().Load(project)
	if !ok {
		return nil
	}
	created := v.(time.Time)
	roles := make([]string, 0, len(gs))
	for _, g := range gs {
		if !g.created.Before(created) {
			roles = append(roles, g.role)
		}
	}
	return roles
}

// evaluate decides without the cache: allowed by a cluster binding or a
// binding in the project; otherwise 403 if the principal has any binding
// there (it can see the project) or any cluster binding, else 404 for
// project-level requests.
func (p *Policy) evaluate(s *snapshot, principal, component, collection, verb, project string) apiserver.Decision {
	if r, ok := s.system[principal]; ok {
		if r.Allows(component, collection, verb) {
			return apiserver.Allow
		}
		return apiserver.Deny
	}
	// A node holds its built-in role cluster-wide and nothing else (node
	// principals cannot be bound).
	if strings.HasPrefix(principal, iamv1.PrincipalNode+":") {
		if s.node.Allows(component, collection, verb) {
			return apiserver.Allow
		}
		return apiserver.Deny
	}
	for _, role := range s.cluster[principal] {
		if s.roles[role].Allows(component, collection, verb) {
			return apiserver.Allow
		}
	}
	if project == "" {
		return apiserver.Deny
	}
	inProject := p.grants(s, principal, project)
	for _, role := range inProject {
		if s.roles[role].Allows(component, collection, verb) {
			return apiserver.Allow
		}
	}
	if len(inProject) > 0 || len(s.cluster[principal]) > 0 {
		return apiserver.Deny
	}
	return apiserver.Hide
}

// Projects implements apiserver.Authorizer.
func (p *Policy) Projects(_ context.Context, pr apiserver.Principal, at apiserver.Attributes) []string {
	s := p.snap.Load()
	var out []string
	for _, proj := range s.projects[pr.Name] {
		for _, role := range p.grants(s, pr.Name, proj) {
			if s.roles[role].Allows(at.Component, at.Collection, at.Verb) {
				out = append(out, proj)
				break
			}
		}
	}
	return out
}

// Active returns nil if the principal of a verified token still exists
// with the same UID and is enabled, and the access key it used (if any)
// still exists and is enabled; otherwise an error wrapping ErrRevoked.
func (p *Policy) Active(pr apiserver.Principal) error {
	kind, rest, _ := strings.Cut(pr.Name, ":")
	var v any
	var ok bool
	switch kind {
	case iamv1.PrincipalUser:
		v, ok = p.users.Load().Load(rest)
	case iamv1.PrincipalServiceAccount:
		v, ok = p.sas.Load().Load(rest)
	case iamv1.PrincipalNode:
		// A node is active while its NodeCredential exists with the UID
		// its token names and is Enrolled.
		v, ok = p.nodes.Load().Load(rest)
	case iamv1.PrincipalSystem:
		if _, ok := p.snap.Load().system[pr.Name]; ok {
			return nil
		}
		return fmt.Errorf("%w: unknown system principal", ErrRevoked)
	}
	if !ok {
		return fmt.Errorf("%w: principal does not exist", ErrRevoked)
	}
	st := v.(principalState)
	switch {
	case st.uid != pr.UID:
		return fmt.Errorf("%w: principal was recreated", ErrRevoked)
	case st.disabled:
		return fmt.Errorf("%w: principal is disabled (or the node is not enrolled)", ErrRevoked)
	}
	if pr.AccessKeyID != "" {
		if en, ok := p.keys.Load().Load(pr.AccessKeyID); !ok || !en.(bool) {
			return fmt.Errorf("%w: access key deleted or disabled", ErrRevoked)
		}
	}
	return nil
}

// Bindings returns the roles bound to principal cluster-wide and per
// project (projects as they exist now).
func (p *Policy) Bindings(principal string) ([]string, map[string][]string) {
	s := p.snap.Load()
	cluster := slices.Clone(s.cluster[principal])
	sort.Strings(cluster)
	var projects map[string][]string
	for _, proj := range s.projects[principal] {
		if r := p.grants(s, principal, proj); len(r) > 0 {
			if projects == nil {
				projects = map[string][]string{}
			}
			sort.Strings(r)
			projects[proj] = r
		}
	}
	return cluster, projects
}

// Allowed reports whether pr holds permission perm in project ("" for
// cluster-wide); for iam's own endpoints.
func (p *Policy) Allowed(ctx context.Context, pr apiserver.Principal, perm Permission, project string) bool {
	return p.Authorize(ctx, pr, apiserver.Attributes{Component: perm.Component, Collection: perm.Collection, Verb: perm.Verb, Project: project}) == apiserver.Allow
}

// prefixEnd returns the smallest key greater than every key with prefix.
func prefixEnd(prefix string) []byte {
	end := []byte(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
