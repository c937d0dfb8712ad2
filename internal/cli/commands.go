package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/internal/cli/clikit/manifest"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

func newStatusCmd(cf *clikit.ClientFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every component's health and the endpoint URLs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (*api.NodeStatus, error) {
				st, err := c.Client.Status(ctx)
				if _, answered := client.ProblemOf(err); answered {
					return nil, err
				}
				if err != nil {
					return nil, fmt.Errorf("cannot reach %s: %w (is `ultracloud up` running?)", c.Client.Endpoint(), err)
				}
				return st, nil
			}, clikit.Table(printStatus))
		},
	}
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// printStatus prints a node's status for people; a node that is not ready
// exits with code 2.
func printStatus(w io.Writer, st *api.NodeStatus) error {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY"
	}
	fmt.Fprintf(w, "Node %s (API v%d): %s\n\n", st.Node, st.Version, ready)
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tSTATE\tENDPOINTS\tERROR")
	for _, cs := range st.Components {
		var eps []string
		for _, k := range []string{"api", "raft", "metrics", "openapi", "etcd"} {
			if v, ok := cs.Endpoints[k]; ok {
				eps = append(eps, k+"="+v)
			}
		}
		ep := strings.Join(eps, " ")
		if ep == "" {
			ep = "-"
		}
		e := cs.Error
		if e == "" {
			e = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cs.Name, cs.State, ep, e)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printDetails(w, st.Components)
	if !st.Ready {
		return &ExitError{Code: 2, Err: errors.New("node is not ready")}
	}
	return nil
}

func newGetCmd(cf *clikit.ClientFlags) *cobra.Command {
	var out, selector string
	var allProjects bool
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME]",
		Short: "List resources of a type, or show one",
		Example: `  ultracloud get projects
  ultracloud get project demo -o yaml
  ultracloud get projects -l team=web`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			// One object prints as itself in JSON and YAML, and as a
			// one-row table; a list as a List.
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (clikit.Objects, error) {
				k, err := c.Kind(ctx, args[0])
				if err != nil {
					return clikit.Objects{}, err
				}
				rs, err := c.Resources(k, allProjects && len(args) == 1)
				if err != nil {
					return clikit.Objects{}, err
				}
				if len(args) == 2 {
					o, err := rs.Get(ctx, args[1])
					if err != nil {
						return clikit.Objects{}, err
					}
					return clikit.Objects{Kind: k, Items: []api.Object{*o}, Revision: o.Metadata.Revision}, nil
				}
				items, rev, err := rs.ListAll(ctx, client.ListOptions{LabelSelector: selector})
				if err != nil {
					return clikit.Objects{}, err
				}
				return clikit.Objects{Kind: k, Items: items, Revision: rev, ShowProject: allProjects && k.Scope == api.ScopeProject}, nil
			}, func(w io.Writer, f clikit.Format, l clikit.Objects) error {
				if len(args) == 2 && f != clikit.FormatTable {
					return clikit.PrintData(w, f, l.Items[0])
				}
				return clikit.PrintObjects(w, f, l)
			})
		},
	}
	clikit.OutputFlag(cmd, &out)
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. app=web,tier!=db")
	cmd.Flags().BoolVarP(&allProjects, "all-projects", "A", false, "list project-scoped resources of every project")
	return cmd
}

func newDescribeCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe TYPE NAME",
		Short: "Show one resource in full, for people",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := cf.Connect()
			if err != nil {
				return err
			}
			rs, _, err := c.Collection(ctx, args[0], false)
			if err != nil {
				return err
			}
			o, err := rs.Get(ctx, args[1])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			m := o.Metadata
			fmt.Fprintf(w, "Kind:       %s\nName:       %s\n", o.Kind, m.Name)
			if m.Project != "" {
				fmt.Fprintf(w, "Project:    %s\n", m.Project)
			}
			fmt.Fprintf(w, "UID:        %s\nRevision:   %d\n", m.UID, m.Revision)
			if m.CreatedAt != nil {
				fmt.Fprintf(w, "Created:    %s (%s ago)\n", m.CreatedAt.Format("2006-01-02 15:04:05 MST"), clikit.Age(m.CreatedAt))
			}
			if m.UpdatedAt != nil {
				fmt.Fprintf(w, "Updated:    %s (%s ago)\n", m.UpdatedAt.Format("2006-01-02 15:04:05 MST"), clikit.Age(m.UpdatedAt))
			}
			if len(m.Labels) == 0 {
				fmt.Fprintln(w, "Labels:     <none>")
			} else {
				fmt.Fprintln(w, "Labels:")
				_ = printIndented(w, m.Labels)
			}
			for _, sec := range []struct {
				title string
				raw   json.RawMessage
			}{{"Spec", o.Spec}, {"Status", o.Status}} {
				if len(sec.raw) == 0 || string(sec.raw) == "{}" || string(sec.raw) == "null" {
					fmt.Fprintf(w, "%s:%s<none>\n", sec.title, strings.Repeat(" ", 11-len(sec.title)))
					continue
				}
				var v any
				if err := json.Unmarshal(sec.raw, &v); err != nil {
					return err
				}
				fmt.Fprintf(w, "%s:\n", sec.title)
				_ = printIndented(w, v)
			}
			return nil
		},
	}
	return cmd
}

func printIndented(w io.Writer, v any) error {
	var y bytes.Buffer
	if err := clikit.WriteYAML(&y, v); err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimRight(y.String(), "\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	return nil
}

// kindByName finds a kind by its Kind name among the discovery document.
func kindByName(d *api.Discovery, kind string) (api.KindInfo, bool) {
	for _, k := range d.Kinds {
		if k.Kind == kind {
			return k, true
		}
	}
	return api.KindInfo{}, false
}

// targetFor picks the collection for a resource read from a file.
func targetFor(c *client.Client, d *api.Discovery, o *api.Object, defaultProject string) (*client.Resources, api.KindInfo, error) {
	k, ok := kindByName(d, o.Kind)
	if !ok {
		return nil, k, fmt.Errorf("%s %q: kind %q is not served here (GET /v1 lists kinds)", o.Kind, o.Metadata.Name, o.Kind)
	}
	project := o.Metadata.Project
	if project == "" {
		project = defaultProject
	}
	if k.Scope == api.ScopeProject && project == "" {
		return nil, k, fmt.Errorf("%s %q is project-scoped: set metadata.project or pass -p", o.Kind, o.Metadata.Name)
	}
	if k.Scope == api.ScopeCluster {
		project = ""
	}
	o.Metadata.Project = project
	return c.Resources(k.Collection, project), k, nil
}

func newApplyCmd(cf *clikit.ClientFlags) *cobra.Command {
	var file, out string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update the resources in a YAML or JSON file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f FILE is required (use -f - for stdin)")
			}
			f, err := clikit.ParseOutput(out)
			if err != nil {
				return err
			}
			objs, err := manifest.Read(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, cc, err := cf.Client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			d, err := c.Discovery(ctx)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			var applied []api.Object
			for i := range objs {
				rs, k, err := targetFor(c, d, &objs[i], cc.Project)
				if err != nil {
					return err
				}
				res, verb, err := rs.Apply(ctx, &objs[i])
				if err != nil {
					return fmt.Errorf("%s/%s: %w", k.Singular, objs[i].Metadata.Name, err)
				}
				if f == clikit.FormatTable {
					fmt.Fprintf(w, "%s/%s %s (%d of %d)\n", k.Singular, res.Metadata.Name, verb, i+1, len(objs))
				}
				applied = append(applied, *res)
			}
			if f != clikit.FormatTable {
				return clikit.PrintData(w, f, applied)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "file with resources (YAML or JSON; - for stdin)")
	clikit.OutputFlag(cmd, &out)
	return cmd
}

func newDeleteCmd(cf *clikit.ClientFlags) *cobra.Command {
	var file string
	var ignoreMissing bool
	cmd := &cobra.Command{
		Use:   "delete (TYPE NAME... | -f FILE)",
		Short: "Delete resources by name or as listed in a file",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cc, err := cf.Client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			w := cmd.OutOrStdout()
			del := func(rs *client.Resources, k api.KindInfo, name string) error {
				_, err := rs.Delete(ctx, name, 0)
				if client.IsNotFound(err) && ignoreMissing {
					fmt.Fprintf(w, "%s/%s not found (ignored)\n", k.Singular, name)
					return nil
				}
				if err != nil {
					return fmt.Errorf("%s/%s: %w", k.Singular, name, err)
				}
				fmt.Fprintf(w, "%s/%s deleted\n", k.Singular, name)
				return nil
			}
			if file != "" {
				if len(args) > 0 {
					return errors.New("give either -f FILE or TYPE NAME, not both")
				}
				objs, err := manifest.Read(file, cmd.InOrStdin())
				if err != nil {
					return err
				}
				d, err := c.Discovery(ctx)
				if err != nil {
					return err
				}
				for i := range objs {
					rs, k, err := targetFor(c, d, &objs[i], cc.Project)
					if err != nil {
						return err
					}
					if err := del(rs, k, objs[i].Metadata.Name); err != nil {
						return err
					}
				}
				return nil
			}
			if len(args) < 2 {
				return errors.New("usage: ultracloud delete TYPE NAME... (or -f FILE)")
			}
			k, err := clikit.FindKind(ctx, c, args[0])
			if err != nil {
				return err
			}
			rs, err := clikit.ResourcesFor(c, k, cc.Project, false)
			if err != nil {
				return err
			}
			for _, name := range args[1:] {
				if err := del(rs, k, name); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "delete the resources listed in this file")
	cmd.Flags().BoolVar(&ignoreMissing, "ignore-not-found", false, "succeed when a resource does not exist")
	return cmd
}

func newWatchCmd(cf *clikit.ClientFlags) *cobra.Command {
	var out, selector string
	var since int64
	var allProjects bool
	cmd := &cobra.Command{
		Use:   "watch TYPE",
		Short: "Stream changes to resources of a type",
		Long: `watch prints each change as it happens. Without --since it first prints every
current resource as ADDED. With --since REV it prints every change after
revision REV (a list's revision). Broken connections resume by themselves.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := clikit.ParseOutput(out)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := cf.Connect()
			if err != nil {
				return err
			}
			rs, k, err := c.Collection(ctx, args[0], allProjects)
			if err != nil {
				return err
			}
			opts := client.WatchOptions{LabelSelector: selector}
			if cmd.Flags().Changed("since") {
				opts.Since = &since
			}
			wt, err := rs.Watch(ctx, opts)
			if err != nil {
				return err
			}
			defer wt.Stop()
			w := cmd.OutOrStdout()
			for ev := range wt.Events() {
				if ev.Type == api.EventBookmark {
					continue
				}
				switch f {
				case clikit.FormatJSON:
					b, _ := json.Marshal(ev)
					fmt.Fprintf(w, "%s\n", b)
				case clikit.FormatYAML:
					fmt.Fprintln(w, "---")
					_ = clikit.PrintData(w, f, ev)
				default:
					name := ev.Object.Metadata.Name
					if ev.Object.Metadata.Project != "" {
						name = ev.Object.Metadata.Project + "/" + name
					}
					fmt.Fprintf(w, "%-9s %s/%s revision=%d\n", ev.Type, k.Singular, name, ev.Revision)
				}
			}
			if err := wt.Err(); err != nil {
				return err
			}
			return nil
		},
	}
	clikit.OutputFlag(cmd, &out)
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector")
	cmd.Flags().Int64Var(&since, "since", 0, "print changes after this revision")
	cmd.Flags().BoolVarP(&allProjects, "all-projects", "A", false, "watch every project")
	return cmd
}

func newVersionCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and API version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "ultracloud %s (API v%d)\n", version(), api.Version)
			return nil
		},
	}
}

// printDetails prints each component's details as one line, keys sorted,
// after the status table: "chainfire: leader=n1 members=3 revision=42".
func printDetails(w io.Writer, comps []api.ComponentStatus) {
	first := true
	for _, cs := range comps {
		if len(cs.Details) == 0 {
			continue
		}
		if first {
			fmt.Fprintln(w)
			first = false
		}
		keys := slices.Sorted(maps.Keys(cs.Details))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + cs.Details[k]
		}
		fmt.Fprintf(w, "%s: %s\n", cs.Name, strings.Join(parts, " "))
	}
}
