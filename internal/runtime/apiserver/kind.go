package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

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
	objType        reflect.Type
}

// Register adds kind def to the API. It must be called before the API serves.
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
		prefix:  "/r/" + def.Collection + "/",
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
	return a.addKind(k)
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
