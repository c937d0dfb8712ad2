package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// Resources addresses one collection: cluster-scoped (project ""), inside a
// project, or - for list and watch of project-scoped kinds - across every
// project (project "").
type Resources struct {
	c          *Client
	collection string
	project    string
}

// Resources returns a handle on collection in project ("" for cluster-scoped
// kinds or cross-project lists).
func (c *Client) Resources(collection, project string) *Resources {
	return &Resources{c: c, collection: collection, project: project}
}

func (r *Resources) path(name string) string {
	p := "/v1/" + url.PathEscape(r.collection)
	if r.project != "" {
		p = "/v1/projects/" + url.PathEscape(r.project) + "/" + url.PathEscape(r.collection)
	}
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

// ListOptions select a page.
type ListOptions struct {
	Limit         int
	Continue      string
	LabelSelector string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Continue != "" {
		q.Set("continue", o.Continue)
	}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	return q
}

// List returns one page.
func (r *Resources) List(ctx context.Context, o ListOptions) (*api.List, error) {
	var l api.List
	if err := r.c.do(ctx, http.MethodGet, r.path(""), o.query(), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// ListAll follows continue tokens and returns every item, and the revision
// of the first page.
func (r *Resources) ListAll(ctx context.Context, o ListOptions) ([]api.Object, int64, error) {
	var items []api.Object
	var rev int64
	for {
		l, err := r.List(ctx, o)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = l.Metadata.Revision
		}
		items = append(items, l.Items...)
		if l.Metadata.Continue == "" {
			return items, rev, nil
		}
		o.Continue = l.Metadata.Continue
	}
}

// Get returns one resource.
func (r *Resources) Get(ctx context.Context, name string) (*api.Object, error) {
	var o api.Object
	if err := r.c.do(ctx, http.MethodGet, r.path(name), nil, nil, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// Create creates o (its metadata.name names it).
func (r *Resources) Create(ctx context.Context, o *api.Object) (*api.Object, error) {
	var out api.Object
	if err := r.c.do(ctx, http.MethodPost, r.path(""), nil, o, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Update replaces o's labels and spec; with o.Metadata.Revision set, only if
// the stored revision still equals it (else a conflict error).
func (r *Resources) Update(ctx context.Context, o *api.Object) (*api.Object, error) {
	var out api.Object
	if err := r.c.do(ctx, http.MethodPut, r.path(o.Metadata.Name), nil, o, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateStatus replaces o's status (conditional on its revision if set).
func (r *Resources) UpdateStatus(ctx context.Context, o *api.Object) (*api.Object, error) {
	var out api.Object
	if err := r.c.do(ctx, http.MethodPut, r.path(o.Metadata.Name)+"/status", nil, o, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete removes name and returns its last state. A revision > 0 makes the
// delete conditional.
func (r *Resources) Delete(ctx context.Context, name string, revision int64) (*api.Object, error) {
	q := url.Values{}
	if revision > 0 {
		q.Set("revision", strconv.FormatInt(revision, 10))
	}
	var out api.Object
	if err := r.c.do(ctx, http.MethodDelete, r.path(name), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Apply creates o, or updates it if it exists (retrying on conflicts), and
// reports whether it created, updated or left it unchanged.
func (r *Resources) Apply(ctx context.Context, o *api.Object) (*api.Object, string, error) {
	for attempt := 0; ; attempt++ {
		cur, err := r.Get(ctx, o.Metadata.Name)
		if IsNotFound(err) {
			out, err := r.Create(ctx, o)
			if IsAlreadyExists(err) && attempt < 5 {
				continue
			}
			return out, "created", err
		}
		if err != nil {
			return nil, "", err
		}
		upd := *o
		upd.Metadata.Revision = cur.Metadata.Revision
		out, err := r.Update(ctx, &upd)
		if IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if out.Metadata.Revision == cur.Metadata.Revision {
			return out, "unchanged", nil
		}
		return out, "updated", nil
	}
}
