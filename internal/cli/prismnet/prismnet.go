// Package prismnet holds the CLI verbs of prismnet, tenant networks:
// `ultracloud network|subnet|port|secgroup|router|fip|extnet ...`, which
// the command tree adds at the top level. Each verb reads or writes the
// kinds of pkg/api/prismnetv1 through the generic SDK; changes to an
// existing object are read-modify-writes conditional on the revision read,
// so a concurrent change is a conflict, never a lost update.
//
// Like every component's CLI package it talks to the API only through pkg/
// and internal/cli/clikit; it never imports internal/prismnet. What the
// server validates (CIDRs inside networks, free addresses, immutability)
// stays the server's: the flags here only check their own syntax, so a
// typo is named before anything is sent.
package prismnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// NewCmds returns prismnet's top-level commands.
func NewCmds(cf *clikit.ClientFlags) []*cobra.Command {
	return []*cobra.Command{
		newNetworkCmd(cf), newSubnetCmd(cf), newPortCmd(cf), newSecGroupCmd(cf),
		newRouterCmd(cf), newFIPCmd(cf), newExtNetCmd(cf),
	}
}

// kind names one of prismnet's collections as the verbs address it.
type kind struct {
	kind       string // e.g. "Network"
	collection string // e.g. "networks"
	singular   string // as messages name an object: "network/web"
	cluster    bool   // cluster-scoped (no project)
}

var (
	networks  = kind{prismnetv1.NetworkKind, prismnetv1.NetworkCollection, "network", false}
	subnets   = kind{prismnetv1.SubnetKind, prismnetv1.SubnetCollection, "subnet", false}
	ports     = kind{prismnetv1.PortKind, prismnetv1.PortCollection, "port", false}
	secgroups = kind{prismnetv1.SecurityGroupKind, prismnetv1.SecurityGroupCollection, "securitygroup", false}
	routers   = kind{prismnetv1.RouterKind, prismnetv1.RouterCollection, "router", false}
	fips      = kind{prismnetv1.FloatingIPKind, prismnetv1.FloatingIPCollection, "floatingip", false}
	extnets   = kind{prismnetv1.ExternalNetworkKind, prismnetv1.ExternalNetworkCollection, "externalnetwork", true}
	hosts     = kind{prismnetv1.HostKind, prismnetv1.HostCollection, "networkhost", true}
)

// ref is how messages name one object: "port/web-1".
func (k kind) ref(name string) string { return k.singular + "/" + name }

// handle returns the collection handle of k in the effective project (all
// projects with allProjects), after checking that the endpoint serves k:
// an older or partial control plane then says so instead of answering a
// confusing 404 for the collection.
func (k kind) handle(ctx context.Context, c *clikit.Conn, allProjects bool) (*client.Resources, error) {
	d, err := c.Client.Discovery(ctx)
	if err != nil {
		return nil, err
	}
	served := false
	for _, ki := range d.Kinds {
		served = served || ki.Collection == k.collection
	}
	if !served {
		return nil, fmt.Errorf("this endpoint does not serve %s (%s) yet: its prismnet control plane predates them or is not running (see `ultracloud status`)", k.collection, k.kind)
	}
	scope := api.ScopeProject
	if k.cluster {
		scope = api.ScopeCluster
	}
	return clikit.ResourcesFor(c.Client, api.KindInfo{Kind: k.kind, Collection: k.collection, Scope: scope}, c.Config.Project, allProjects)
}

// object is a prismnet resource with its spec and status decoded.
type object[S, T any] struct {
	Raw    *api.Object
	Spec   S
	Status T
}

func (o object[S, T]) name() string { return o.Raw.Metadata.Name }

func decode[S, T any](k kind, raw *api.Object) (object[S, T], error) {
	o := object[S, T]{Raw: raw}
	if len(raw.Spec) > 0 {
		if err := json.Unmarshal(raw.Spec, &o.Spec); err != nil {
			return o, fmt.Errorf("%s: decoding the spec: %w", k.ref(raw.Metadata.Name), err)
		}
	}
	if len(raw.Status) > 0 && string(raw.Status) != "null" {
		if err := json.Unmarshal(raw.Status, &o.Status); err != nil {
			return o, fmt.Errorf("%s: decoding the status: %w", k.ref(raw.Metadata.Name), err)
		}
	}
	return o, nil
}

// get reads one object of k.
func get[S, T any](ctx context.Context, c *clikit.Conn, k kind, name string) (object[S, T], error) {
	rs, err := k.handle(ctx, c, false)
	if err != nil {
		return object[S, T]{}, err
	}
	raw, err := rs.Get(ctx, name)
	if err != nil {
		return object[S, T]{}, fmt.Errorf("%s: %w", k.ref(name), err)
	}
	return decode[S, T](k, raw)
}

// listed is the result of a list verb: the objects (filtered) and the
// list's revision.
type listed[S, T any] struct {
	k           kind
	items       []object[S, T]
	revision    int64
	showProject bool
}

// list reads every object of k in the effective project (or all).
func list[S, T any](ctx context.Context, c *clikit.Conn, k kind, allProjects bool) (listed[S, T], error) {
	rs, err := k.handle(ctx, c, allProjects)
	if err != nil {
		return listed[S, T]{}, err
	}
	raws, rev, err := rs.ListAll(ctx, client.ListOptions{})
	if err != nil {
		return listed[S, T]{}, err
	}
	l := listed[S, T]{k: k, revision: rev, showProject: allProjects && !k.cluster}
	for i := range raws {
		o, err := decode[S, T](k, &raws[i])
		if err != nil {
			return l, err
		}
		l.items = append(l.items, o)
	}
	return l, nil
}

// create creates name in k with spec and returns it as clikit reports
// created objects.
func create(ctx context.Context, c *clikit.Conn, k kind, name string, spec any) (clikit.Created, error) {
	rs, err := k.handle(ctx, c, false)
	if err != nil {
		return clikit.Created{}, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return clikit.Created{}, err
	}
	o, err := rs.Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b})
	if err != nil {
		return clikit.Created{}, fmt.Errorf("%s: %w", k.ref(name), err)
	}
	return clikit.Created{Kind: api.KindInfo{Kind: k.kind, Collection: k.collection, Singular: k.singular}, Object: o}, nil
}

// errNoChange makes update write nothing and report success.
var errNoChange = errors.New("prismnet: nothing to change")

// update reads name, applies change to its spec and writes it back,
// conditional on the revision read. When someone else changed the object in
// between: with retry (a change that does not depend on what was read,
// such as setting a field) it reads and applies again; without, it fails
// with a conflict that says so and changes nothing. change returning
// errNoChange leaves the object as it is. Fields of the stored spec this
// CLI does not know are kept.
func update[S any](ctx context.Context, c *clikit.Conn, k kind, name string, retry bool, change func(*S) error) (*api.Object, error) {
	rs, err := k.handle(ctx, c, false)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		o, err := rs.Get(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.ref(name), err)
		}
		spec, err := patchSpec(o.Spec, change)
		if errors.Is(err, errNoChange) {
			return o, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.ref(name), err)
		}
		o.Spec = spec
		out, err := rs.Update(ctx, o) // o.Metadata.Revision is the one read
		if client.IsConflict(err) && retry && attempt < 5 {
			continue
		}
		if client.IsConflict(err) {
			return nil, fmt.Errorf("%s changed while this command ran (revision %d is no longer current); nothing was changed: look at it again and retry: %w",
				k.ref(name), o.Metadata.Revision, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.ref(name), err)
		}
		return out, nil
	}
}

// patchSpec applies change to the spec in raw and returns the new raw
// spec: the top-level fields S knows are rewritten from the changed value,
// the others are kept as stored (a newer server's fields survive an older
// CLI's update).
func patchSpec[S any](raw json.RawMessage, change func(*S) error) (json.RawMessage, error) {
	var s S
	fields := map[string]json.RawMessage{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("decoding the spec: %w", err)
		}
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, fmt.Errorf("decoding the spec: %w", err)
		}
	}
	before, err := fieldsOf(s)
	if err != nil {
		return nil, err
	}
	if err := change(&s); err != nil {
		return nil, err
	}
	after, err := fieldsOf(s)
	if err != nil {
		return nil, err
	}
	for f := range before {
		if _, ok := after[f]; !ok {
			delete(fields, f)
		}
	}
	for f, v := range after {
		fields[f] = v
	}
	return json.Marshal(fields)
}

func fieldsOf(v any) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]json.RawMessage{}
	return m, json.Unmarshal(b, &m)
}

// column is one column of a list table.
type column[S, T any] struct {
	head  string
	value func(o object[S, T]) string
}

// printList prints a list as a table (NAME, the columns, AGE), or as an
// api.List in JSON and YAML, as `ultracloud get` prints it.
func printList[S, T any](cols []column[S, T]) clikit.Printer[listed[S, T]] {
	return func(w io.Writer, f clikit.Format, l listed[S, T]) error {
		if f != clikit.FormatTable {
			items := make([]api.Object, 0, len(l.items))
			for _, o := range l.items {
				items = append(items, *o.Raw)
			}
			return clikit.PrintData(w, f, api.List{Kind: l.k.kind + "List", Items: items, Metadata: api.ListMeta{Revision: l.revision}})
		}
		if len(l.items) == 0 {
			_, err := fmt.Fprintf(w, "No %s found.\n", l.k.collection)
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		head := []string{"NAME"}
		if l.showProject {
			head = []string{"PROJECT", "NAME"}
		}
		for _, c := range cols {
			head = append(head, c.head)
		}
		fmt.Fprintln(tw, strings.Join(append(head, "AGE"), "\t"))
		for _, o := range l.items {
			row := []string{o.name()}
			if l.showProject {
				row = []string{o.Raw.Metadata.Project, o.name()}
			}
			for _, c := range cols {
				row = append(row, dash(c.value(o)))
			}
			fmt.Fprintln(tw, strings.Join(append(row, clikit.Age(o.Raw.Metadata.CreatedAt)), "\t"))
		}
		return tw.Flush()
	}
}

// listCmd is a kind's `list` verb; filters, if set, adds the verb's own
// flags and returns which objects to keep.
func listCmd[S, T any](cf *clikit.ClientFlags, k kind, what string, cols []column[S, T], filters func(cmd *cobra.Command) func(object[S, T]) bool) *cobra.Command {
	var out string
	var all bool
	cmd := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List " + what, Args: cobra.NoArgs}
	keep := func(object[S, T]) bool { return true }
	if filters != nil {
		keep = filters(cmd)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (listed[S, T], error) {
			l, err := list[S, T](ctx, c, k, all)
			if err != nil {
				return l, err
			}
			kept := l.items[:0]
			for _, o := range l.items {
				if keep(o) {
					kept = append(kept, o)
				}
			}
			l.items = kept
			return l, nil
		}, printList(cols))
	}
	clikit.OutputFlag(cmd, &out)
	if !k.cluster {
		cmd.Flags().BoolVarP(&all, "all-projects", "A", false, "list across every project you may see")
	}
	return cmd
}

// getCmd is a kind's `get NAME` verb: a one-row table, or the object in
// JSON or YAML.
func getCmd[S, T any](cf *clikit.ClientFlags, k kind, cols []column[S, T]) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one " + k.singular + " as a table row, or in full with -o json|yaml",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (object[S, T], error) {
				return get[S, T](ctx, c, k, args[0])
			}, func(w io.Writer, f clikit.Format, o object[S, T]) error {
				if f != clikit.FormatTable {
					return clikit.PrintData(w, f, o.Raw)
				}
				return printList(cols)(w, f, listed[S, T]{k: k, items: []object[S, T]{o}})
			})
		},
	}
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// describeCmd is a kind's `describe NAME` verb: a readable block, or the
// object in JSON or YAML. more reads what the block shows beyond the object
// (related objects); it may leave them out when they cannot be read.
func describeCmd[S, T, X any](cf *clikit.ClientFlags, k kind, more func(ctx context.Context, c *clikit.Conn, o object[S, T]) X,
	block func(d *desc, o object[S, T], x X)) *cobra.Command {
	type view struct {
		o object[S, T]
		x X
	}
	var out string
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show one " + k.singular + " for people (in full with -o json|yaml)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := clikit.ParseOutput(out)
			if err != nil {
				return err
			}
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (view, error) {
				o, err := get[S, T](ctx, c, k, args[0])
				if err != nil || f != clikit.FormatTable || more == nil {
					return view{o: o}, err
				}
				return view{o: o, x: more(ctx, c, o)}, nil
			}, func(w io.Writer, f clikit.Format, v view) error {
				if f != clikit.FormatTable {
					return clikit.PrintData(w, f, v.o.Raw)
				}
				d := newDesc(w)
				m := v.o.Raw.Metadata
				d.kv("Name", m.Name)
				if m.Project != "" {
					d.kv("Project", m.Project)
				}
				if m.CreatedAt != nil {
					d.kv("Created", timeAgo(m.CreatedAt))
				}
				d.kv("Revision", fmt.Sprint(m.Revision))
				block(d, v.o, v.x)
				return d.flush()
			})
		},
	}
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// deleteCmd is a kind's `delete NAME...` verb: it deletes in turn, reports
// each, and stops at the first failure (a 409 in_use names what still
// uses the object).
func deleteCmd(cf *clikit.ClientFlags, k kind) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete " + k.collection + " by name",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.Connect()
			if err != nil {
				return err
			}
			rs, err := k.handle(cmd.Context(), c, false)
			if err != nil {
				return err
			}
			for _, name := range args {
				if _, err := rs.Delete(cmd.Context(), name, 0); err != nil {
					return fmt.Errorf("%s: %w", k.ref(name), err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", k.ref(name))
			}
			return nil
		},
	}
}

// createRun is the RunE body of a create verb whose spec is built (and its
// flags checked) by spec, before anything is dialled.
func createRun(cmd *cobra.Command, cf *clikit.ClientFlags, out string, k kind, name string, spec func() (any, error)) error {
	if _, err := clikit.ParseOutput(out); err != nil {
		return err
	}
	s, err := spec()
	if err != nil {
		return err
	}
	return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (clikit.Created, error) {
		return create(ctx, c, k, name, s)
	}, clikit.PrintCreated)
}

// updatedRun is the RunE body of a verb that changes one object: it prints
// "<kind>/<name> <what()>" (what is asked after the call), or the object
// with -o json|yaml.
func updatedRun(cmd *cobra.Command, cf *clikit.ClientFlags, out string, k kind, name string, what func() string, call func(ctx context.Context, c *clikit.Conn) (*api.Object, error)) error {
	return clikit.Run(cmd, cf, out, call, func(w io.Writer, f clikit.Format, o *api.Object) error {
		if f != clikit.FormatTable {
			return clikit.PrintData(w, f, o)
		}
		_, err := fmt.Fprintf(w, "%s %s\n", k.ref(name), what())
		return err
	})
}

// desc writes a describe block: aligned "Key:  value" lines, and indented
// tables under a heading.
type desc struct {
	w   io.Writer
	tw  *tabwriter.Writer
	err error
}

func newDesc(w io.Writer) *desc {
	return &desc{w: w, tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

// kv writes one "Key:  value" line ("-" for an empty value).
func (d *desc) kv(key, value string) {
	fmt.Fprintf(d.tw, "%s:\t%s\n", key, dash(value))
}

// table writes a heading and, indented, a table with head (or none).
func (d *desc) table(heading string, head []string, rows [][]string, none string) {
	if len(rows) == 0 {
		d.kv(heading, none)
		return
	}
	d.flushTW()
	fmt.Fprintf(d.w, "%s:\n", heading)
	tw := tabwriter.NewWriter(d.w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "  "+strings.Join(head, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = dash(c)
		}
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil && d.err == nil {
		d.err = err
	}
}

func (d *desc) flushTW() {
	if err := d.tw.Flush(); err != nil && d.err == nil {
		d.err = err
	}
	d.tw = tabwriter.NewWriter(d.w, 0, 4, 2, ' ', 0)
}

func (d *desc) flush() error {
	d.flushTW()
	return d.err
}

// timeAgo shows a time and how long ago it was ("" for none).
func timeAgo(t *time.Time) string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format("2006-01-02 15:04:05 MST"), clikit.Age(t))
}

// dash shows an empty value as "-".
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// joinOr joins values with ", ", or returns none.
func joinOr(values []string, none string) string {
	if len(values) == 0 {
		return none
	}
	return strings.Join(values, ", ")
}
