package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// KindDef declares one resource kind. S is its spec type and T its status
// type; both are decoded strictly, so their JSON field names are the API.
type KindDef[S, T any] struct {
	Kind       string // e.g. "Project"
	Collection string // e.g. "projects"
	Singular   string // e.g. "project"
	ShortNames []string
	Scope      api.Scope
	Columns    []api.Column
	// MaxBody limits request bodies for this kind (DefaultMaxBody if 0).
	MaxBody int64
	// Default fills in defaults before validation (may be nil).
	Default func(spec *S)
	// ValidateSpec checks a spec on create and update (may be nil). Return a
	// FieldError naming the field ("spec.size") so the client sees which.
	ValidateSpec func(spec *S) error
	// ValidateUpdate checks a change from old to new, e.g. immutable fields
	// (may be nil).
	ValidateUpdate func(old, new *S) error
	// ValidateStatus checks a status written through the status endpoint
	// (may be nil).
	ValidateStatus func(status *T) error
	// InitialStatus, if set, gives the status a new object is created with,
	// so a state known at creation needs no controller round trip.
	InitialStatus func(spec *S) *T
	// OnCreate, if set, runs on create after validation and authorization,
	// before the write. It may change the status, add store operations and
	// preconditions that commit atomically with the object (e.g. secret
	// material under keys outside the resource tree), and give a status to
	// return in this one response only (a secret shown once). The request's
	// principal is in ctx (PrincipalFrom). Errors go to the client.
	OnCreate func(ctx context.Context, c *Creation[S, T]) error
	// OnUpdate, if set, runs on a spec update that changes the spec, after
	// validation, with the stored object; like OnCreate it may add store
	// operations and preconditions committed atomically with the update.
	OnUpdate func(ctx context.Context, u *Update[S, T]) error
	// OnStatusUpdate, if set, runs on every status write with the stored
	// and the new status: it may keep server-owned fields (allocated
	// addresses) by copying them from old into new, or refuse the write.
	OnStatusUpdate func(old, new *T) error
	// OnDelete, if set, runs before a delete with the object as stored and
	// may add store operations committed atomically with the delete (e.g.
	// removing the secret material OnCreate wrote).
	OnDelete func(ctx context.Context, d *Deletion[S, T]) error
	// AfterWrite, if set, runs after every successful write of this kind
	// (create, update, status, delete) with the revision of the write,
	// before the response is sent: e.g. to wait until a cache reflects it,
	// so the writer reads its own writes.
	AfterWrite func(ctx context.Context, revision int64)
	// Actions are the kind's endpoints on named objects (POST
	// .../vms/{name}/start); see Action.
	Actions []Action
	// NodeBinding, if set, makes the kind node-bound: it returns the node
	// an object is bound to ("" for none), e.g. the host a port is bound
	// to, a VM is placed on, or the node an object is named after. Such objects are a host agent's desired
	// state, and a node principal (Principal.Node, the identity of a
	// worker's agents) sees and changes only the objects bound to its own
	// node: others are 404 to get, status writes and actions, left out of
	// lists, and a watch reports an object that moves off the node as
	// DELETED. Other principals are unaffected. Kinds without it are
	// shared desired state (networks, security groups), which node
	// principals read as their role allows.
	NodeBinding func(meta *api.ObjectMeta, spec *S, status *T) string
	// SelfRegistered (with NodeBinding) lets a node principal create the
	// object bound to its own node even though its role grants no create:
	// a worker registering itself (as a kubelet creates its Node). It
	// creates nothing bound elsewhere.
	SelfRegistered bool
}

// Creation is what an OnCreate hook sees and may change.
type Creation[S, T any] struct {
	// Project, Name and UID identify the object being created.
	Project, Name, UID string
	// Spec is the validated, defaulted spec (read-only).
	Spec *S
	// Status is the status the object will be stored with (InitialStatus's
	// if set, else the zero value).
	Status *T
	// Ops are extra store operations committed with the object.
	Ops []storage.Op
	// Require are conditions the write needs; if one fails, nothing is
	// written and the create fails with that condition's Err.
	Require []Precondition
	// ResponseStatus, when set, replaces Status in the create response
	// only; it is never stored.
	ResponseStatus *T
}

// Precondition is a store comparison a write depends on, with the error to
// report when it does not hold.
type Precondition struct {
	Compare storage.Compare
	Err     error
	// Retry marks a condition whose failure means "chosen from a view that
	// is no longer current" (an address another create took meanwhile):
	// the write is then attempted again, hook included, a few times before
	// Err is reported.
	Retry bool
}

// Update is what an OnUpdate hook sees and may add to.
type Update[S, T any] struct {
	// Object is the object as stored.
	Object *api.Object
	// Old is the stored spec, New the validated new one (read-only).
	Old, New *S
	// Status is the stored status; changes to it are stored with the
	// update (e.g. a phase that the new spec makes stale).
	Status *T
	// Ops are extra store operations committed with the update.
	Ops []storage.Op
	// Require are conditions the update needs; if one fails, nothing is
	// written and the update fails with its Err.
	Require []Precondition
}

// Deletion is what an OnDelete hook sees and may add to.
type Deletion[S, T any] struct {
	// Object is the object as stored, about to be deleted.
	Object *api.Object
	// Spec and Status are its decoded spec and status (zero if absent).
	Spec   *S
	Status *T
	// Ops are extra store operations committed with the delete.
	Ops []storage.Op
	// Require are conditions the delete needs (e.g. that no dependent
	// object exists: storage.CompareRangeEmpty over their keys); if one
	// fails, nothing is deleted and the delete fails with its Err.
	Require []Precondition
}

// createHookResult is the type-erased outcome of an OnCreate hook.
type createHookResult struct {
	status, response json.RawMessage
	ops              []storage.Op
	require          []Precondition
}

// wireObject is the typed form of a request body for kind S/T.
type wireObject[S, T any] struct {
	Kind     string         `json:"kind,omitempty"`
	Metadata api.ObjectMeta `json:"metadata"`
	Spec     S              `json:"spec"`
	Status   *T             `json:"status,omitempty"`
}

// kind is the type-erased view of a registered KindDef.
type kind struct {
	info    api.KindInfo
	maxBody int64
	prefix  string // store key prefix of the collection, ending in '/'
	// decode parses a create/update body and returns its normalized metadata
	// and spec; status is ignored (it has its own endpoint).
	decode func(body []byte) (api.ObjectMeta, json.RawMessage, error)
	// initialStatus returns the status of a new object with the given spec
	// JSON, or nil.
	initialStatus func(spec json.RawMessage) (json.RawMessage, error)
	// decodeStatus parses a status-endpoint body and returns metadata and
	// the normalized status.
	decodeStatus func(body []byte) (api.ObjectMeta, json.RawMessage, error)
	// validateUpdate compares stored and new spec JSON.
	validateUpdate func(old, new json.RawMessage) error
	// onUpdate runs the OnUpdate hook (nil without one) and returns the
	// status to store with the update.
	onUpdate func(ctx context.Context, o *api.Object, newSpec json.RawMessage) ([]storage.Op, []Precondition, json.RawMessage, error)
	// onStatusUpdate runs the OnStatusUpdate hook (nil without one) and
	// returns the status to store.
	onStatusUpdate func(old, new json.RawMessage) (json.RawMessage, error)
	// onCreate runs the OnCreate hook (nil without one).
	onCreate func(ctx context.Context, project, name, uid string, spec, status json.RawMessage) (createHookResult, error)
	// onDelete runs the OnDelete hook (nil without one).
	onDelete func(ctx context.Context, o *api.Object) ([]storage.Op, []Precondition, error)
	// nodeOf returns the node an object is bound to (nil: the kind is not
	// node-bound; see KindDef.NodeBinding).
	nodeOf func(o *api.Object) (string, error)
	// selfRegistered: see KindDef.SelfRegistered.
	selfRegistered bool
	// afterWrite runs the AfterWrite hook (nil without one).
	afterWrite func(ctx context.Context, revision int64)
	objType    reflect.Type
	// actions are the kind's declared actions (see checkActions).
	actions []*Action
}

// isProjects reports whether k is the Project kind, whose objects are the
// projects themselves (addKind reserves the collection for it).
func (k *kind) isProjects() bool { return k.info.Collection == "projects" }

// Register adds kind def to the API. It must be called before Mount.
func Register[S, T any](a *API, component string, def KindDef[S, T]) error {
	if def.Kind == "" || def.Collection == "" || def.Singular == "" {
		return errors.New("apiserver: kind needs Kind, Collection and Singular")
	}
	if def.Scope != api.ScopeProject && def.Scope != api.ScopeCluster {
		return fmt.Errorf("apiserver: kind %s: scope must be project or cluster", def.Kind)
	}
	if ValidateName("collection", def.Collection) != nil {
		return fmt.Errorf("apiserver: kind %s: collection %q is not a DNS label", def.Kind, def.Collection)
	}
	maxBody := def.MaxBody
	if maxBody == 0 {
		maxBody = DefaultMaxBody
	}
	k := &kind{
		info: api.KindInfo{Kind: def.Kind, Collection: def.Collection, Singular: def.Singular,
			ShortNames: def.ShortNames, Scope: def.Scope, Component: component, Columns: def.Columns},
		maxBody: maxBody,
		prefix:  CollectionPrefix(def.Collection),
		objType: reflect.TypeFor[wireObject[S, T]](),
	}
	k.decode = func(body []byte) (api.ObjectMeta, json.RawMessage, error) {
		var o wireObject[S, T]
		if err := DecodeStrict(body, &o); err != nil {
			return api.ObjectMeta{}, nil, err
		}
		if o.Kind != "" && o.Kind != def.Kind {
			return api.ObjectMeta{}, nil, FieldError("kind", "kind %q does not match this collection's kind %q", o.Kind, def.Kind)
		}
		if def.Default != nil {
			def.Default(&o.Spec)
		}
		if def.ValidateSpec != nil {
			if err := def.ValidateSpec(&o.Spec); err != nil {
				return api.ObjectMeta{}, nil, asFieldError("spec", err)
			}
		}
		spec, err := json.Marshal(&o.Spec)
		if err != nil {
			return api.ObjectMeta{}, nil, fmt.Errorf("apiserver: encoding %s spec: %w", def.Kind, err)
		}
		return o.Metadata, spec, nil
	}
	k.decodeStatus = func(body []byte) (api.ObjectMeta, json.RawMessage, error) {
		var o wireObject[S, T]
		if err := DecodeStrict(body, &o); err != nil {
			return api.ObjectMeta{}, nil, err
		}
		if o.Status == nil {
			return api.ObjectMeta{}, nil, FieldError("status", "the status endpoint needs a status object")
		}
		if def.ValidateStatus != nil {
			if err := def.ValidateStatus(o.Status); err != nil {
				return api.ObjectMeta{}, nil, asFieldError("status", err)
			}
		}
		st, err := json.Marshal(o.Status)
		if err != nil {
			return api.ObjectMeta{}, nil, fmt.Errorf("apiserver: encoding %s status: %w", def.Kind, err)
		}
		return o.Metadata, st, nil
	}
	k.initialStatus = func(specRaw json.RawMessage) (json.RawMessage, error) {
		if def.InitialStatus == nil {
			return nil, nil
		}
		var spec S
		if err := json.Unmarshal(specRaw, &spec); err != nil {
			return nil, fmt.Errorf("apiserver: decoding %s spec: %w", def.Kind, err)
		}
		st := def.InitialStatus(&spec)
		if st == nil {
			return nil, nil
		}
		b, err := json.Marshal(st)
		if err != nil {
			return nil, fmt.Errorf("apiserver: encoding %s status: %w", def.Kind, err)
		}
		return b, nil
	}
	k.validateUpdate = func(oldRaw, newRaw json.RawMessage) error {
		if def.ValidateUpdate == nil {
			return nil
		}
		var oldS, newS S
		if err := json.Unmarshal(oldRaw, &oldS); err != nil {
			return fmt.Errorf("apiserver: decoding stored %s spec: %w", def.Kind, err)
		}
		if err := json.Unmarshal(newRaw, &newS); err != nil {
			return fmt.Errorf("apiserver: decoding new %s spec: %w", def.Kind, err)
		}
		return asFieldError("spec", def.ValidateUpdate(&oldS, &newS))
	}
	if def.OnCreate != nil {
		k.onCreate = func(ctx context.Context, project, name, uid string, specRaw, statusRaw json.RawMessage) (createHookResult, error) {
			var spec S
			if err := json.Unmarshal(specRaw, &spec); err != nil {
				return createHookResult{}, fmt.Errorf("apiserver: decoding %s spec: %w", def.Kind, err)
			}
			st := new(T)
			if len(statusRaw) > 0 {
				if err := json.Unmarshal(statusRaw, st); err != nil {
					return createHookResult{}, fmt.Errorf("apiserver: decoding %s status: %w", def.Kind, err)
				}
			}
			c := &Creation[S, T]{Project: project, Name: name, UID: uid, Spec: &spec, Status: st}
			if err := def.OnCreate(ctx, c); err != nil {
				return createHookResult{}, err
			}
			res := createHookResult{ops: c.Ops, require: c.Require}
			var err error
			if res.status, err = json.Marshal(c.Status); err != nil {
				return createHookResult{}, fmt.Errorf("apiserver: encoding %s status: %w", def.Kind, err)
			}
			if len(statusRaw) == 0 {
				if zero, _ := json.Marshal(new(T)); sameJSON(zero, res.status) {
					res.status = nil
				}
			}
			res.response = res.status
			if c.ResponseStatus != nil {
				if res.response, err = json.Marshal(c.ResponseStatus); err != nil {
					return createHookResult{}, fmt.Errorf("apiserver: encoding %s status: %w", def.Kind, err)
				}
			}
			return res, nil
		}
	}
	if def.OnUpdate != nil {
		k.onUpdate = func(ctx context.Context, o *api.Object, newRaw json.RawMessage) ([]storage.Op, []Precondition, json.RawMessage, error) {
			old, status, err := decodeObject[S, T](def.Kind, o)
			if err != nil {
				return nil, nil, nil, err
			}
			var spec S
			if err := json.Unmarshal(newRaw, &spec); err != nil {
				return nil, nil, nil, fmt.Errorf("apiserver: decoding %s spec: %w", def.Kind, err)
			}
			u := &Update[S, T]{Object: o, Old: old, New: &spec, Status: status}
			if err := def.OnUpdate(ctx, u); err != nil {
				return nil, nil, nil, err
			}
			st := o.Status
			if zero, _ := json.Marshal(new(T)); len(o.Status) > 0 || !sameJSON(zero, mustJSON(u.Status)) {
				if st, err = json.Marshal(u.Status); err != nil {
					return nil, nil, nil, fmt.Errorf("apiserver: encoding %s status: %w", def.Kind, err)
				}
			}
			return u.Ops, u.Require, st, nil
		}
	}
	if def.OnStatusUpdate != nil {
		k.onStatusUpdate = func(oldRaw, newRaw json.RawMessage) (json.RawMessage, error) {
			old, st := new(T), new(T)
			if len(oldRaw) > 0 {
				if err := json.Unmarshal(oldRaw, old); err != nil {
					return nil, fmt.Errorf("apiserver: decoding stored %s status: %w", def.Kind, err)
				}
			}
			if err := json.Unmarshal(newRaw, st); err != nil {
				return nil, fmt.Errorf("apiserver: decoding %s status: %w", def.Kind, err)
			}
			if err := def.OnStatusUpdate(old, st); err != nil {
				return nil, asFieldError("status", err)
			}
			b, err := json.Marshal(st)
			if err != nil {
				return nil, fmt.Errorf("apiserver: encoding %s status: %w", def.Kind, err)
			}
			return b, nil
		}
	}
	if def.OnDelete != nil {
		k.onDelete = func(ctx context.Context, o *api.Object) ([]storage.Op, []Precondition, error) {
			spec, status, err := decodeObject[S, T](def.Kind, o)
			if err != nil {
				return nil, nil, err
			}
			d := &Deletion[S, T]{Object: o, Spec: spec, Status: status}
			if err := def.OnDelete(ctx, d); err != nil {
				return nil, nil, err
			}
			return d.Ops, d.Require, nil
		}
	}
	if def.SelfRegistered && def.NodeBinding == nil {
		return fmt.Errorf("apiserver: kind %s: SelfRegistered needs NodeBinding", def.Kind)
	}
	k.selfRegistered = def.SelfRegistered
	if def.NodeBinding != nil {
		k.nodeOf = func(o *api.Object) (string, error) {
			spec, status, err := decodeObject[S, T](def.Kind, o)
			if err != nil {
				return "", err
			}
			return def.NodeBinding(&o.Metadata, spec, status), nil
		}
	}
	k.afterWrite = def.AfterWrite
	if err := checkActions(k, def.Actions); err != nil {
		return err
	}
	return a.addKind(k)
}

// mustJSON encodes v, which is a decoded status and so always encodes.
func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// decodeObject decodes a stored object's spec and status (zero values when
// absent).
func decodeObject[S, T any](kind string, o *api.Object) (*S, *T, error) {
	spec, status := new(S), new(T)
	if len(o.Spec) > 0 {
		if err := json.Unmarshal(o.Spec, spec); err != nil {
			return nil, nil, fmt.Errorf("apiserver: decoding stored %s spec: %w", kind, err)
		}
	}
	if len(o.Status) > 0 {
		if err := json.Unmarshal(o.Status, status); err != nil {
			return nil, nil, fmt.Errorf("apiserver: decoding stored %s status: %w", kind, err)
		}
	}
	return spec, status, nil
}

// asFieldError turns a validator's plain error into a 400 naming field.
func asFieldError(field string, err error) error {
	if err == nil {
		return nil
	}
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	return FieldError(field, "%v", err)
}

// validateLabels checks label keys and values as Kubernetes does, so
// selectors written for Kubernetes behave the same here.
func validateLabels(labels map[string]string) error {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return FieldError("metadata.labels", "label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(labels[k]); len(errs) > 0 {
			return FieldError("metadata.labels", "label %q value %q: %s", k, labels[k], strings.Join(errs, "; "))
		}
	}
	if len(labels) > 64 {
		return FieldError("metadata.labels", "at most 64 labels, got %d", len(labels))
	}
	return nil
}

// sameJSON reports whether two JSON documents are byte-identical after
// compaction (our encoder is deterministic, so this detects no-op writes).
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// notFound is the 404 for a named resource.
func notFound(k *kind, project, name string) error {
	if project != "" {
		return Errorf(http.StatusNotFound, api.CodeNotFound, "%s %q not found in project %q", k.info.Singular, name, project)
	}
	return Errorf(http.StatusNotFound, api.CodeNotFound, "%s %q not found", k.info.Singular, name)
}
