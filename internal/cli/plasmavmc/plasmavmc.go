// Package plasmavmc holds the CLI verbs of plasmavmc, virtual machines:
// `ultracloud vm|image|worker ...`, which the command tree adds at the top
// level. Each verb reads or writes the kinds of pkg/api/plasmavmcv1 through
// the generic SDK, or, for what is not JSON (image data, the console and
// its scrollback), through plain HTTP with the same credentials.
//
// Like every component's CLI package it talks to the API only through pkg/
// and internal/cli/clikit; it never imports internal/plasmavmc. What the
// server validates (limits, images and networks that exist, immutability)
// stays the server's: the flags here only check their own syntax, so a
// typo is named before anything is sent.
//
// # Waiting
//
// `vm create`, `vm start|stop|reboot` with --wait (create also by default
// when stdout is a terminal) follow the VM with a watch from the revision
// the call returned, print each phase change with its message and the time
// since the call, and end when the VM reaches the phase asked for; a VM in
// Error fails the command with its message and last error, and so does the
// --timeout, naming the phase the VM was in and what it waited for. On a
// terminal a status line shows the time as it passes; elsewhere each
// change is one plain line (on stderr: stdout keeps the command's result).
//
// # The console contract
//
// `vm console NAME` reads the VM, then opens a WebSocket at status.console
// (a path below the endpoint; an absolute ws(s):// or http(s):// URL is
// used as it is), by default
//
//	GET /v1/projects/{project}/vms/{name}/console
//	Upgrade: websocket
//	Authorization: Bearer <token>
//
// A refusal before the upgrade is a problem+json answer, shown as the other
// verbs show errors (404 for an unknown VM, 409 for one that has no console
// yet). After the upgrade, binary messages carry the serial port's raw
// bytes both ways: what the server sends is written to stdout as it is,
// what the user types is sent as it is, one message per read. The server
// may start with a banner or the recent scrollback. Text messages from the
// server are notices for the user and go to stderr; the client sends none.
// The server ends the session with a close frame whose reason says why
// (the VM stopped, another console took over); the client prints that
// reason. Detaching (Ctrl-], or the end of stdin when it is not a
// terminal) closes with status 1000 and the reason "detached"; it never
// affects the VM. `vm console NAME --log` instead reads
//
//	GET /v1/projects/{project}/vms/{name}/consolelog
//
// which answers text/plain: the last output the worker kept.
package plasmavmc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// NewCmds returns plasmavmc's top-level commands.
func NewCmds(cf *clikit.ClientFlags) []*cobra.Command {
	return []*cobra.Command{newVMCmd(cf), newImageCmd(cf), newWorkerCmd(cf)}
}

// kind names one of plasmavmc's collections as the verbs address it.
type kind struct {
	kind       string // e.g. "VM"
	collection string // e.g. "vms"
	singular   string // as messages name an object: "vm/web"
	cluster    bool   // cluster-scoped (no project)
}

var (
	vms     = kind{plasmavmcv1.VMKind, plasmavmcv1.VMCollection, "vm", false}
	images  = kind{plasmavmcv1.ImageKind, plasmavmcv1.ImageCollection, "image", false}
	workers = kind{plasmavmcv1.WorkerKind, plasmavmcv1.WorkerCollection, "worker", true}
)

// ref is how messages name one object: "vm/web-1".
func (k kind) ref(name string) string { return k.singular + "/" + name }

// handle returns the collection handle of k in the effective project (all
// projects with allProjects), after checking that the endpoint serves k:
// a control plane without plasmavmc then says so instead of answering a
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
		return nil, fmt.Errorf("this endpoint does not serve %s (%s): its plasmavmc control plane is not running (see `ultracloud status`)", k.collection, k.kind)
	}
	scope := api.ScopeProject
	if k.cluster {
		scope = api.ScopeCluster
	}
	return clikit.ResourcesFor(c.Client, api.KindInfo{Kind: k.kind, Collection: k.collection, Scope: scope}, c.Config.Project, allProjects)
}

// object is a plasmavmc resource with its spec and status decoded.
type object[S, T any] struct {
	Raw    *api.Object
	Spec   S
	Status T
}

func (o object[S, T]) name() string { return o.Raw.Metadata.Name }

type (
	vm     = object[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus]
	image  = object[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus]
	worker = object[plasmavmcv1.WorkerSpec, plasmavmcv1.WorkerStatus]
)

func decode[S, T any](k kind, raw *api.Object) (object[S, T], error) {
	o := object[S, T]{Raw: raw}
	if len(raw.Spec) > 0 && string(raw.Spec) != "null" {
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

// listed is the result of a list verb: the objects and the list's
// revision.
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

// create creates name in k with spec.
func create(ctx context.Context, c *clikit.Conn, k kind, name string, spec any) (*api.Object, error) {
	rs, err := k.handle(ctx, c, false)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	o, err := rs.Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.ref(name), err)
	}
	return o, nil
}

// created reports a created object as clikit does.
func created(k kind, o *api.Object) clikit.Created {
	return clikit.Created{Kind: api.KindInfo{Kind: k.kind, Collection: k.collection, Singular: k.singular}, Object: o}
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

// listCmd is a kind's `list` verb.
func listCmd[S, T any](cf *clikit.ClientFlags, k kind, what string, cols []column[S, T]) *cobra.Command {
	var out string
	var all bool
	cmd := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List " + what, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (listed[S, T], error) {
				return list[S, T](ctx, c, k, all)
			}, printList(cols))
		},
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
// each, and stops at the first failure.
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

// mib shows an amount of MiB as people say it: 512 MiB, 2 GiB, 1.5 GiB.
func mib(n int) string {
	switch {
	case n == 0:
		return ""
	case n >= 1024 && n%1024 == 0:
		return fmt.Sprintf("%d GiB", n/1024)
	case n >= 1024:
		return fmt.Sprintf("%.1f GiB", float64(n)/1024)
	}
	return fmt.Sprintf("%d MiB", n)
}
