package clikit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Conn is an API connection and the effective client settings it was made
// with.
type Conn struct {
	Client *client.Client
	Config ClientConfig
}

// FindKind resolves what the user typed (collection, singular, short name
// or kind, any case) to a kind the endpoint serves.
func FindKind(ctx context.Context, c *client.Client, what string) (api.KindInfo, error) {
	d, err := c.Discovery(ctx)
	if err != nil {
		return api.KindInfo{}, err
	}
	w := strings.ToLower(what)
	var names []string
	for _, k := range d.Kinds {
		names = append(names, k.Collection)
		if w == k.Collection || w == k.Singular || w == strings.ToLower(k.Kind) {
			return k, nil
		}
		for _, s := range k.ShortNames {
			if w == s {
				return k, nil
			}
		}
	}
	return api.KindInfo{}, fmt.Errorf("%q is not a resource type here (available: %s)", what, strings.Join(names, ", "))
}

// ResourcesFor returns the collection handle for kind k, checking that a
// project is given for project-scoped kinds unless allProjects.
func ResourcesFor(c *client.Client, k api.KindInfo, project string, allProjects bool) (*client.Resources, error) {
	if k.Scope == api.ScopeCluster {
		return c.Resources(k.Collection, ""), nil
	}
	if allProjects {
		return c.Resources(k.Collection, ""), nil
	}
	if project == "" {
		return nil, fmt.Errorf("%s are project-scoped: pass -p PROJECT (or --all-projects to list every project)", k.Collection)
	}
	return c.Resources(k.Collection, project), nil
}

// Kind resolves what the user typed to a kind (see FindKind).
func (c *Conn) Kind(ctx context.Context, what string) (api.KindInfo, error) {
	return FindKind(ctx, c.Client, what)
}

// Resources is ResourcesFor in the effective project.
func (c *Conn) Resources(k api.KindInfo, allProjects bool) (*client.Resources, error) {
	return ResourcesFor(c.Client, k, c.Config.Project, allProjects)
}

// Collection resolves what the user typed to a collection handle,
// checking the project for project-scoped kinds.
func (c *Conn) Collection(ctx context.Context, what string, allProjects bool) (*client.Resources, api.KindInfo, error) {
	k, err := c.Kind(ctx, what)
	if err != nil {
		return nil, k, err
	}
	rs, err := c.Resources(k, allProjects)
	return rs, k, err
}

// Created is an object a create verb made, with its kind.
type Created struct {
	Kind   api.KindInfo
	Object *api.Object
}

// Create creates a resource named name with the given spec in collection
// (in the effective project, for project-scoped kinds).
func (c *Conn) Create(ctx context.Context, collection, name string, spec any) (Created, error) {
	rs, k, err := c.Collection(ctx, collection, false)
	if err != nil {
		return Created{}, err
	}
	o, err := createIn(ctx, rs, k.Singular, name, spec)
	if err != nil {
		return Created{}, err
	}
	return Created{Kind: k, Object: o}, nil
}

// createIn creates name with spec in rs, a collection whose objects
// messages name singular/name.
func createIn(ctx context.Context, rs *client.Resources, singular, name string, spec any) (*api.Object, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	o, err := rs.Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b})
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", singular, name, err)
	}
	return o, nil
}

// PrintCreated reports a created object as a line, JSON or YAML.
func PrintCreated(w io.Writer, f Format, c Created) error {
	if f != FormatTable {
		return PrintData(w, f, c.Object)
	}
	name := c.Object.Metadata.Name
	if c.Object.Metadata.Project != "" {
		name += " in project " + c.Object.Metadata.Project
	}
	_, err := fmt.Fprintf(w, "%s/%s created\n", c.Kind.Singular, name)
	return err
}

// CreateCmdRun is the RunE body of a plain create verb: create name in
// collection with spec, and report it.
func CreateCmdRun(cmd *cobra.Command, cf *ClientFlags, output, collection, name string, spec any) error {
	return Run(cmd, cf, output, func(ctx context.Context, c *Conn) (Created, error) {
		return c.Create(ctx, collection, name, spec)
	}, PrintCreated)
}

// ListCmd is a `list` verb over one collection; what says what it lists.
func ListCmd(cf *ClientFlags, collection, what string) *cobra.Command {
	var out string
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List " + what,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Run(cmd, cf, out, func(ctx context.Context, c *Conn) (Objects, error) {
				return c.List(ctx, collection, all, all)
			}, PrintObjects)
		},
	}
	OutputFlag(cmd, &out)
	cmd.Flags().BoolVarP(&all, "all-projects", "A", false, "list across every project you may see (project-scoped kinds)")
	return cmd
}

// List lists the collection (across projects if allProjects), with a
// PROJECT column if showProject and the kind is project-scoped.
func (c *Conn) List(ctx context.Context, collection string, allProjects, showProject bool) (Objects, error) {
	rs, k, err := c.Collection(ctx, collection, allProjects)
	if err != nil {
		return Objects{}, err
	}
	items, rev, err := rs.ListAll(ctx, client.ListOptions{})
	if err != nil {
		return Objects{}, err
	}
	return Objects{Kind: k, Items: items, Revision: rev, ShowProject: showProject && k.Scope == api.ScopeProject}, nil
}

// DeleteCmd is a `delete NAME...` verb over one collection.
func DeleteCmd(cf *ClientFlags, collection string) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete by name",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return DeleteNamed(cmd, cf, collection, args)
		},
	}
}

// DeleteNamed deletes the named objects of collection in turn, reporting
// each, and stops at the first failure.
func DeleteNamed(cmd *cobra.Command, cf *ClientFlags, collection string, names []string) error {
	c, err := cf.Connect()
	if err != nil {
		return err
	}
	rs, k, err := c.Collection(cmd.Context(), collection, false)
	if err != nil {
		return err
	}
	return deleteEach(cmd, rs, k.Singular, names)
}

// deleteEach deletes the named objects of rs in turn, reporting each as
// singular/name, and stops at the first failure.
func deleteEach(cmd *cobra.Command, rs *client.Resources, singular string, names []string) error {
	for _, name := range names {
		if _, err := rs.Delete(cmd.Context(), name, 0); err != nil {
			return fmt.Errorf("%s/%s: %w", singular, name, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s/%s deleted\n", singular, name)
	}
	return nil
}
