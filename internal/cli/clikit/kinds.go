package clikit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Kind names one collection of a component as that component's typed verbs
// address it (the generic verbs of ListCmd and DeleteCmd find kinds by
// discovery instead).
type Kind struct {
	Kind       string // e.g. "Network"
	Collection string // e.g. "networks"
	Singular   string // as messages name an object: "network/web"
	Cluster    bool   // cluster-scoped (no project)
	// Unserved ends the error of an endpoint that does not serve the kind,
	// after "this endpoint does not serve networks (Network)": why that
	// may be and where to look, e.g. ": its plasmavmc control plane is not
	// running (see `ultracloud status`)".
	Unserved string
}

// Ref is how messages name one object: "port/web-1".
func (k Kind) Ref(name string) string { return k.Singular + "/" + name }

// Info is k as the discovery document describes a kind.
func (k Kind) Info() api.KindInfo {
	scope := api.ScopeProject
	if k.Cluster {
		scope = api.ScopeCluster
	}
	return api.KindInfo{Kind: k.Kind, Collection: k.Collection, Singular: k.Singular, Scope: scope}
}

// Handle returns the collection handle of k in the effective project (all
// projects with allProjects), after checking that the endpoint serves k:
// an older or partial control plane then says so (with k.Unserved)
// instead of answering a confusing 404 for the collection.
func (k Kind) Handle(ctx context.Context, c *Conn, allProjects bool) (*client.Resources, error) {
	d, err := c.Client.Discovery(ctx)
	if err != nil {
		return nil, err
	}
	served := false
	for _, ki := range d.Kinds {
		served = served || ki.Collection == k.Collection
	}
	if !served {
		return nil, fmt.Errorf("this endpoint does not serve %s (%s)%s", k.Collection, k.Kind, k.Unserved)
	}
	return ResourcesFor(c.Client, k.Info(), c.Config.Project, allProjects)
}

// Create creates name in k with spec.
func (k Kind) Create(ctx context.Context, c *Conn, name string, spec any) (*api.Object, error) {
	rs, err := k.Handle(ctx, c, false)
	if err != nil {
		return nil, err
	}
	return createIn(ctx, rs, k.Singular, name, spec)
}

// Created reports an object of k that a create verb made, as
// PrintCreated prints it.
func (k Kind) Created(o *api.Object) Created {
	return Created{Kind: api.KindInfo{Kind: k.Kind, Collection: k.Collection, Singular: k.Singular}, Object: o}
}

// Object is an object of a component's kind with its spec and status
// decoded.
type Object[S, T any] struct {
	Raw    *api.Object
	Spec   S
	Status T
}

// Name is the object's name.
func (o Object[S, T]) Name() string { return o.Raw.Metadata.Name }

// Decode decodes the spec and status of raw, an object of k.
func Decode[S, T any](k Kind, raw *api.Object) (Object[S, T], error) {
	o := Object[S, T]{Raw: raw}
	if len(raw.Spec) > 0 && string(raw.Spec) != "null" {
		if err := json.Unmarshal(raw.Spec, &o.Spec); err != nil {
			return o, fmt.Errorf("%s: decoding the spec: %w", k.Ref(raw.Metadata.Name), err)
		}
	}
	if len(raw.Status) > 0 && string(raw.Status) != "null" {
		if err := json.Unmarshal(raw.Status, &o.Status); err != nil {
			return o, fmt.Errorf("%s: decoding the status: %w", k.Ref(raw.Metadata.Name), err)
		}
	}
	return o, nil
}

// Get reads one object of k.
func Get[S, T any](ctx context.Context, c *Conn, k Kind, name string) (Object[S, T], error) {
	rs, err := k.Handle(ctx, c, false)
	if err != nil {
		return Object[S, T]{}, err
	}
	raw, err := rs.Get(ctx, name)
	if err != nil {
		return Object[S, T]{}, fmt.Errorf("%s: %w", k.Ref(name), err)
	}
	return Decode[S, T](k, raw)
}

// Listed is the result of a typed list verb: the objects (filtered, if the
// verb filters) and the list's revision.
type Listed[S, T any] struct {
	Kind     Kind
	Items    []Object[S, T]
	Revision int64
	// ShowProject adds a PROJECT column (a list across projects).
	ShowProject bool
}

// List reads every object of k in the effective project (or all).
func List[S, T any](ctx context.Context, c *Conn, k Kind, allProjects bool) (Listed[S, T], error) {
	rs, err := k.Handle(ctx, c, allProjects)
	if err != nil {
		return Listed[S, T]{}, err
	}
	raws, rev, err := rs.ListAll(ctx, client.ListOptions{})
	if err != nil {
		return Listed[S, T]{}, err
	}
	l := Listed[S, T]{Kind: k, Revision: rev, ShowProject: allProjects && !k.Cluster}
	for i := range raws {
		o, err := Decode[S, T](k, &raws[i])
		if err != nil {
			return l, err
		}
		l.Items = append(l.Items, o)
	}
	return l, nil
}

// Where returns the objects of l that keep keeps.
func (l Listed[S, T]) Where(keep func(Object[S, T]) bool) []Object[S, T] {
	var kept []Object[S, T]
	for _, o := range l.Items {
		if keep(o) {
			kept = append(kept, o)
		}
	}
	return kept
}

// ListWhere lists k (in the effective project, or all) and returns the
// objects keep keeps: what a describe block shows of the objects of
// another kind that refer to the one described.
func ListWhere[S, T any](ctx context.Context, c *Conn, k Kind, allProjects bool, keep func(Object[S, T]) bool) ([]Object[S, T], error) {
	l, err := List[S, T](ctx, c, k, allProjects)
	if err != nil {
		return nil, err
	}
	return l.Where(keep), nil
}

// Names returns the names of objects, in order.
func Names[S, T any](objects []Object[S, T]) []string {
	var names []string
	for _, o := range objects {
		names = append(names, o.Name())
	}
	return names
}

// Column is one column of a typed list table.
type Column[S, T any] struct {
	Head  string
	Value func(o Object[S, T]) string
}

// PrintList prints a typed list as a table (NAME, the columns, AGE), or as
// an api.List in JSON and YAML, as `ultracloud get` prints it.
func PrintList[S, T any](cols []Column[S, T]) Printer[Listed[S, T]] {
	return func(w io.Writer, f Format, l Listed[S, T]) error {
		if f != FormatTable {
			items := make([]api.Object, 0, len(l.Items))
			for _, o := range l.Items {
				items = append(items, *o.Raw)
			}
			return PrintData(w, f, api.List{Kind: l.Kind.Kind + "List", Items: items, Metadata: api.ListMeta{Revision: l.Revision}})
		}
		if len(l.Items) == 0 {
			_, err := fmt.Fprintf(w, "No %s found.\n", l.Kind.Collection)
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		head := []string{"NAME"}
		if l.ShowProject {
			head = []string{"PROJECT", "NAME"}
		}
		for _, c := range cols {
			head = append(head, c.Head)
		}
		fmt.Fprintln(tw, strings.Join(append(head, "AGE"), "\t"))
		for _, o := range l.Items {
			row := []string{o.Name()}
			if l.ShowProject {
				row = []string{o.Raw.Metadata.Project, o.Name()}
			}
			for _, c := range cols {
				row = append(row, Dash(c.Value(o)))
			}
			fmt.Fprintln(tw, strings.Join(append(row, Age(o.Raw.Metadata.CreatedAt)), "\t"))
		}
		return tw.Flush()
	}
}

// KindListCmd is k's `list` verb; what says what it lists. filters, if
// set, adds the verb's own flags and returns which objects to keep.
func KindListCmd[S, T any](cf *ClientFlags, k Kind, what string, cols []Column[S, T], filters func(cmd *cobra.Command) func(Object[S, T]) bool) *cobra.Command {
	var out string
	var all bool
	cmd := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List " + what, Args: cobra.NoArgs}
	keep := func(Object[S, T]) bool { return true }
	if filters != nil {
		keep = filters(cmd)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return Run(cmd, cf, out, func(ctx context.Context, c *Conn) (Listed[S, T], error) {
			l, err := List[S, T](ctx, c, k, all)
			if err != nil {
				return l, err
			}
			l.Items = l.Where(keep)
			return l, nil
		}, PrintList(cols))
	}
	OutputFlag(cmd, &out)
	if !k.Cluster {
		cmd.Flags().BoolVarP(&all, "all-projects", "A", false, "list across every project you may see")
	}
	return cmd
}

// KindGetCmd is k's `get NAME` verb: a one-row table, or the object in
// JSON or YAML.
func KindGetCmd[S, T any](cf *ClientFlags, k Kind, cols []Column[S, T]) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one " + k.Singular + " as a table row, or in full with -o json|yaml",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return Run(cmd, cf, out, func(ctx context.Context, c *Conn) (Object[S, T], error) {
				return Get[S, T](ctx, c, k, args[0])
			}, func(w io.Writer, f Format, o Object[S, T]) error {
				if f != FormatTable {
					return PrintData(w, f, o.Raw)
				}
				return PrintList(cols)(w, f, Listed[S, T]{Kind: k, Items: []Object[S, T]{o}})
			})
		},
	}
	OutputFlag(cmd, &out)
	return cmd
}

// KindDescribeCmd is k's `describe NAME` verb: a readable block (the
// object's metadata, then what block writes), or the object in JSON or
// YAML. more, if set, reads what the block shows beyond the object
// (related objects); it may leave them out when they cannot be read.
func KindDescribeCmd[S, T, X any](cf *ClientFlags, k Kind, more func(ctx context.Context, c *Conn, o Object[S, T]) X,
	block func(d *Desc, o Object[S, T], x X)) *cobra.Command {
	type view struct {
		o Object[S, T]
		x X
	}
	var out string
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show one " + k.Singular + " for people (in full with -o json|yaml)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := ParseOutput(out)
			if err != nil {
				return err
			}
			return Run(cmd, cf, out, func(ctx context.Context, c *Conn) (view, error) {
				o, err := Get[S, T](ctx, c, k, args[0])
				if err != nil || f != FormatTable || more == nil {
					return view{o: o}, err
				}
				return view{o: o, x: more(ctx, c, o)}, nil
			}, func(w io.Writer, f Format, v view) error {
				if f != FormatTable {
					return PrintData(w, f, v.o.Raw)
				}
				d := NewDesc(w)
				m := v.o.Raw.Metadata
				d.KV("Name", m.Name)
				if m.Project != "" {
					d.KV("Project", m.Project)
				}
				if m.CreatedAt != nil {
					d.KV("Created", TimeAgo(m.CreatedAt))
				}
				d.KV("Revision", fmt.Sprint(m.Revision))
				block(d, v.o, v.x)
				return d.Flush()
			})
		},
	}
	OutputFlag(cmd, &out)
	return cmd
}

// KindDeleteCmd is k's `delete NAME...` verb: it deletes in turn, reports
// each, and stops at the first failure (whose error is the server's, such
// as a 409 in_use naming what still uses the object).
func KindDeleteCmd(cf *ClientFlags, k Kind) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete " + k.Collection + " by name",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.Connect()
			if err != nil {
				return err
			}
			rs, err := k.Handle(cmd.Context(), c, false)
			if err != nil {
				return err
			}
			return deleteEach(cmd, rs, k.Singular, args)
		},
	}
}

// KindCreateRun is the RunE body of k's create verb whose spec is built
// (and its flags checked) by spec, after -o and before anything is
// dialled.
func KindCreateRun[S any](cmd *cobra.Command, cf *ClientFlags, out string, k Kind, name string, spec func() (S, error)) error {
	if _, err := ParseOutput(out); err != nil {
		return err
	}
	s, err := spec()
	if err != nil {
		return err
	}
	return Run(cmd, cf, out, func(ctx context.Context, c *Conn) (Created, error) {
		o, err := k.Create(ctx, c, name, s)
		if err != nil {
			return Created{}, err
		}
		return k.Created(o), nil
	}, PrintCreated)
}
