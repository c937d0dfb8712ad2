// Package iam holds the CLI verbs of iam: `ultracloud iam ...` (users,
// projects, roles, bindings, service accounts, access keys, audit, whoami,
// node credentials, signing-key rotation) and `ultracloud login` / `logout`, which the
// command tree adds at the top level.
//
// Like every component's CLI package it talks to the API only through
// pkg/ (the generic SDK and pkg/client/iamclient) and internal/cli/clikit;
// it never imports internal/iam.
package iam

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// NewCmd is `ultracloud iam`.
func NewCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "iam",
		Short: "Identity and access: users, projects, roles, bindings, service accounts, access keys, node credentials, audit",
		Long: `iam manages who may do what. Users log in with passwords; service accounts
live in a project and authenticate with access keys. Roles (built-in admin,
member, viewer, or custom lists of component.collection.verb patterns) are
granted by bindings: in one project (binding), or everywhere (binding --cluster).
See docs/iam.md.`,
	}
	cmd.AddCommand(newIAMUserCmd(cf), newIAMProjectCmd(cf), newIAMRoleCmd(cf), newIAMBindingCmd(cf),
		newIAMServiceAccountCmd(cf), newIAMAccessKeyCmd(cf), newIAMNodeCredentialCmd(cf), newIAMAuditCmd(cf), newIAMWhoAmICmd(cf), newIAMRotateCmd(cf))
	return cmd
}

func newIAMUserCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Aliases: []string{"users"}, Short: "Users: people who log in with a password"}
	var display, email, out string
	var pwStdin, generate bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user, optionally with a password",
		Example: `  ultracloud iam user create alice --email alice@example.com --generate-password
  echo "$PW" | ultracloud iam user create ci --password-stdin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pwStdin && generate {
				return errors.New("give --password-stdin or --generate-password, not both")
			}
			var password string
			var err error
			switch {
			case pwStdin:
				if password, err = clikit.ReadSecretStdin(cmd.InOrStdin()); err != nil {
					return err
				}
			case generate:
				password = rand.Text()
			}
			err = clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (clikit.Created, error) {
				cr, err := c.Create(ctx, iamv1.UserCollection, args[0], iamv1.UserSpec{DisplayName: display, Email: email})
				if err != nil || password == "" {
					return cr, err
				}
				if cr.Object, err = iamclient.New(c.Client).SetPassword(ctx, args[0], password, ""); err != nil {
					return cr, fmt.Errorf("user %s was created, but setting its password failed: %w", args[0], err)
				}
				return cr, nil
			}, clikit.PrintCreated)
			if err != nil {
				return err
			}
			if generate {
				fmt.Fprintf(cmd.ErrOrStderr(), "Password for %s: %s (shown only now)\n", args[0], password)
			}
			return nil
		},
	}
	create.Flags().StringVar(&display, "display-name", "", "name for people")
	create.Flags().StringVar(&email, "email", "", "email address")
	create.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from stdin")
	create.Flags().BoolVar(&generate, "generate-password", false, "generate a random password and print it once (on stderr)")
	clikit.OutputFlag(create, &out)

	var spStdin, current bool
	setPw := &cobra.Command{
		Use:   "set-password NAME",
		Short: "Set a user's password (your own with --current); ends the user's sessions",
		Long: `set-password sets NAME's password. Administrators (iam.users.setpassword
cluster-wide) need nothing else; users changing their own password pass
--current and give the current password first. With --password-stdin the
password (after the current one, with --current) is read line by line from
stdin; otherwise it is prompted for. Every refresh token of the user stops
working; access tokens expire within their lifetime.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cur, pw string
			if spStdin {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 2*clikit.MaxSecretInput))
				if err != nil {
					return err
				}
				lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
				if current {
					if len(lines) < 2 {
						return errors.New("--current with --password-stdin needs two lines: current password, new password")
					}
					cur, lines = lines[0], lines[1:]
				}
				pw = lines[0]
			} else {
				var err error
				if current {
					if cur, err = clikit.PromptPassword(cf.Env(), "Current password: "); err != nil {
						return err
					}
				}
				if pw, err = clikit.PromptPassword(cf.Env(), "New password: "); err != nil {
					return err
				}
				again, err := clikit.PromptPassword(cf.Env(), "Repeat new password: ")
				if err != nil {
					return err
				}
				if again != pw {
					return errors.New("the passwords differ")
				}
			}
			return clikit.Run(cmd, cf, "", func(ctx context.Context, c *clikit.Conn) (string, error) {
				_, err := iamclient.New(c.Client).SetPassword(ctx, args[0], pw, cur)
				return args[0], err
			}, clikit.Table(func(w io.Writer, user string) error {
				_, err := fmt.Fprintf(w, "Password of user %s changed.\n", user)
				return err
			}))
		},
	}
	setPw.Flags().BoolVar(&spStdin, "password-stdin", false, "read the password(s) from stdin, one per line")
	setPw.Flags().BoolVar(&current, "current", false, "change your own password, giving the current one")

	enable := func(use string, disabled bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: strings.ToUpper(use[:1]) + use[1:] + " a user (disabled users cannot log in and their tokens stop working)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, _, err := cf.Client()
				if err != nil {
					return err
				}
				rs := c.Resources(iamv1.UserCollection, "")
				for attempt := 0; ; attempt++ {
					o, err := rs.Get(cmd.Context(), args[0])
					if err != nil {
						return err
					}
					var spec iamv1.UserSpec
					if err := json.Unmarshal(o.Spec, &spec); err != nil {
						return err
					}
					spec.Disabled = disabled
					if o.Spec, err = json.Marshal(spec); err != nil {
						return err
					}
					_, err = rs.Update(cmd.Context(), o)
					if client.IsConflict(err) && attempt < 5 {
						continue
					}
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "user/%s %sd\n", args[0], use)
					return nil
				}
			},
		}
	}
	cmd.AddCommand(create, clikit.ListCmd(cf, iamv1.UserCollection, "users"), clikit.DeleteCmd(cf, iamv1.UserCollection), setPw,
		enable("disable", true), enable("enable", false))
	return cmd
}

func newIAMProjectCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "project", Aliases: []string{"projects"}, Short: "Projects: the tenant boundary"}
	var display, desc, out string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a project",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.CreateCmdRun(cmd, cf, out, iamv1.ProjectCollection, args[0], iamv1.ProjectSpec{DisplayName: display, Description: desc})
		},
	}
	create.Flags().StringVar(&display, "display-name", "", "name for people")
	create.Flags().StringVar(&desc, "description", "", "what the project is for")
	clikit.OutputFlag(create, &out)
	cmd.AddCommand(create, clikit.ListCmd(cf, iamv1.ProjectCollection, "the projects you may see"), clikit.DeleteCmd(cf, iamv1.ProjectCollection))
	return cmd
}

func newIAMRoleCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "role", Aliases: []string{"roles"}, Short: "Custom roles: lists of component.collection.verb patterns"}
	var perms []string
	var desc, out string
	create := &cobra.Command{
		Use:   "create NAME --permission PATTERN...",
		Short: "Create a custom role",
		Long: `A permission is component.collection.verb (e.g. iam.projects.get); each part is a
name or *. A pattern starting with ! removes what it matches; the last pattern
matching a permission decides. Verbs: get, list, watch, create, update,
updatestatus, delete (and setpassword for users). Built-in roles: admin (*.*.*),
member (everything but managing iam), viewer (get, list, watch).`,
		Example: `  ultracloud iam role create auditor --permission iam.audit.list --permission '*.*.get'
  ultracloud iam role create no-deletes --permission '*.*.*' --permission '!*.*.delete'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(perms) == 0 {
				return errors.New("give at least one --permission")
			}
			return clikit.CreateCmdRun(cmd, cf, out, iamv1.RoleCollection, args[0], iamv1.RoleSpec{Description: desc, Permissions: perms})
		},
	}
	create.Flags().StringArrayVar(&perms, "permission", nil, "permission pattern (repeat)")
	create.Flags().StringVar(&desc, "description", "", "what the role is for")
	clikit.OutputFlag(create, &out)
	cmd.AddCommand(create, clikit.ListCmd(cf, iamv1.RoleCollection, "custom roles"), clikit.DeleteCmd(cf, iamv1.RoleCollection))
	return cmd
}

func newIAMBindingCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "binding", Aliases: []string{"bindings", "rolebinding"},
		Short: "Role bindings: grant a role to a user or service account in a project (or --cluster)"}
	coll := func(cluster bool) string {
		if cluster {
			return iamv1.ClusterRoleBindingCollection
		}
		return iamv1.RoleBindingCollection
	}
	var role, user, sa, out string
	var cluster bool
	create := &cobra.Command{
		Use:   "create NAME --role ROLE (--user USER | --serviceaccount [PROJECT/]NAME) [-p PROJECT | --cluster]",
		Short: "Grant a role",
		Example: `  ultracloud iam binding create alice-dev --role member --user alice -p dev
  ultracloud iam binding create ops-admin --role admin --user ops --cluster
  ultracloud iam binding create ci-deploy --role member --serviceaccount ci -p dev`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == "" || (user == "") == (sa == "") {
				return errors.New("give --role and exactly one of --user and --serviceaccount")
			}
			principal := iamv1.UserPrincipal(user)
			if sa != "" {
				proj, name, ok := strings.Cut(sa, "/")
				if !ok {
					c, err := cf.Resolved()
					if err != nil {
						return err
					}
					if cluster || c.Project == "" {
						return errors.New("--serviceaccount needs PROJECT/NAME (or -p PROJECT for an account in the binding's project)")
					}
					proj, name = c.Project, sa
				}
				principal = iamv1.ServiceAccountPrincipal(proj, name)
			}
			return clikit.CreateCmdRun(cmd, cf, out, coll(cluster), args[0], iamv1.RoleBindingSpec{Role: role, Principal: principal})
		},
	}
	create.Flags().StringVar(&role, "role", "", "role to grant (admin, member, viewer or a custom role)")
	create.Flags().StringVar(&user, "user", "", "user to grant it to")
	create.Flags().StringVar(&sa, "serviceaccount", "", "service account to grant it to: NAME (in -p PROJECT) or PROJECT/NAME")
	create.Flags().BoolVar(&cluster, "cluster", false, "grant everywhere (all projects and cluster-level resources)")
	clikit.OutputFlag(create, &out)

	var lcluster, lall bool
	var lout string
	list := &cobra.Command{
		Use:   "list [-p PROJECT | -A | --cluster]",
		Short: "List bindings of a project, of every project you may see (-A), or cluster-wide ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.Run(cmd, cf, lout, func(ctx context.Context, c *clikit.Conn) (clikit.Objects, error) {
				return c.List(ctx, coll(lcluster), lall, lall && !lcluster)
			}, clikit.PrintObjects)
		},
	}
	list.Flags().BoolVar(&lcluster, "cluster", false, "list cluster-wide bindings")
	list.Flags().BoolVarP(&lall, "all-projects", "A", false, "list bindings of every project you may see")
	clikit.OutputFlag(list, &lout)

	var dcluster bool
	del := &cobra.Command{
		Use:   "delete NAME... [-p PROJECT | --cluster]",
		Short: "Revoke bindings",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.DeleteNamed(cmd, cf, coll(dcluster), args)
		},
	}
	del.Flags().BoolVar(&dcluster, "cluster", false, "delete cluster-wide bindings")
	cmd.AddCommand(create, list, del)
	return cmd
}

func newIAMServiceAccountCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "serviceaccount", Aliases: []string{"serviceaccounts", "sa"},
		Short: "Service accounts: non-human principals of a project, authenticated by access keys"}
	var display, desc, out string
	create := &cobra.Command{
		Use:   "create NAME -p PROJECT",
		Short: "Create a service account",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.CreateCmdRun(cmd, cf, out, iamv1.ServiceAccountCollection, args[0], iamv1.ServiceAccountSpec{DisplayName: display, Description: desc})
		},
	}
	create.Flags().StringVar(&display, "display-name", "", "name for people")
	create.Flags().StringVar(&desc, "description", "", "what the account is for")
	clikit.OutputFlag(create, &out)
	cmd.AddCommand(create, clikit.ListCmd(cf, iamv1.ServiceAccountCollection, "service accounts"), clikit.DeleteCmd(cf, iamv1.ServiceAccountCollection))
	return cmd
}

func newIAMAccessKeyCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "accesskey", Aliases: []string{"accesskeys", "ak"},
		Short: "Access keys: S3-style key ID and secret for a service account or user"}
	var sa, user, desc, out string
	create := &cobra.Command{
		Use:   "create NAME -p PROJECT (--serviceaccount NAME | --user NAME)",
		Short: "Create an access key; its secret is shown only in this output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (sa == "") == (user == "") {
				return errors.New("give exactly one of --serviceaccount and --user")
			}
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (clikit.Created, error) {
				return c.Create(ctx, iamv1.AccessKeyCollection, args[0], iamv1.AccessKeySpec{ServiceAccount: sa, User: user, Description: desc})
			}, func(w io.Writer, f clikit.Format, cr clikit.Created) error {
				if f != clikit.FormatTable {
					return clikit.PrintData(w, f, cr.Object)
				}
				var st iamv1.AccessKeyStatus
				if err := json.Unmarshal(cr.Object.Status, &st); err != nil {
					return fmt.Errorf("reading the new key: %w", err)
				}
				if err := clikit.PrintCreated(w, f, cr); err != nil {
					return err
				}
				fmt.Fprintf(w, "Access key ID:     %s\nSecret access key: %s\n", st.AccessKeyID, st.SecretAccessKey)
				fmt.Fprintln(w, "The secret is shown only now and cannot be retrieved later; store it safely.")
				return nil
			})
		},
	}
	create.Flags().StringVar(&sa, "serviceaccount", "", "service account (in the key's project) the key acts as")
	create.Flags().StringVar(&user, "user", "", "user the key acts as (yourself, unless you administer users)")
	create.Flags().StringVar(&desc, "description", "", "what the key is for")
	clikit.OutputFlag(create, &out)
	cmd.AddCommand(create, clikit.ListCmd(cf, iamv1.AccessKeyCollection, "access keys (never their secrets)"), clikit.DeleteCmd(cf, iamv1.AccessKeyCollection))
	return cmd
}

func newIAMNodeCredentialCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "node-credential", Aliases: []string{"node-credentials", "nodecredential", "nodecred"},
		Short: "Node credentials: the identity of a worker node (one-time join token, then node:NAME)",
		Long: `A node credential is the identity of a node that runs no iam (a worker with
only host agents). Creating one prints a one-time join token; written to the
worker's controlPlane.joinTokenFile, it lets the node enroll once and obtain
its own node key. The node's agents then act as node:NAME, which holds the
built-in node role: read every component's resources but iam's and write
their status, nothing else. Deleting the credential revokes the node.`,
	}
	var ttl, out string
	create := &cobra.Command{
		Use:     "create NAME [--ttl 1h]",
		Short:   "Create a node credential; its join token is shown only in this output",
		Example: `  ultracloud iam node-credential create worker1 --ttl 30m`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (clikit.Created, error) {
				return c.Create(ctx, iamv1.NodeCredentialCollection, args[0], iamv1.NodeCredentialSpec{JoinTokenTTL: ttl})
			}, func(w io.Writer, f clikit.Format, cr clikit.Created) error {
				if f != clikit.FormatTable {
					return clikit.PrintData(w, f, cr.Object)
				}
				var st iamv1.NodeCredentialStatus
				if err := json.Unmarshal(cr.Object.Status, &st); err != nil {
					return fmt.Errorf("reading the new credential: %w", err)
				}
				if err := clikit.PrintCreated(w, f, cr); err != nil {
					return err
				}
				fmt.Fprintf(w, "Join token: %s\n", st.JoinToken)
				if st.JoinTokenExpiresAt != nil {
					fmt.Fprintf(w, "It works once, until %s, and is shown only now.\n", st.JoinTokenExpiresAt.Local().Format("2006-01-02 15:04:05 MST"))
				}
				fmt.Fprintf(w, "Next: on node %s, write it (mode 0600) to the file its controlPlane.joinTokenFile names (default <dataDir>/join-token),\n", args[0])
				fmt.Fprintln(w, "then start or restart the node: it enrolls once and keeps its own key in <dataDir>/node-credential.")
				return nil
			})
		},
	}
	create.Flags().StringVar(&ttl, "ttl", "1h", "how long the join token may be used (1m to 24h)")
	clikit.OutputFlag(create, &out)
	del := &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete node credentials: the nodes' keys stop working and their tokens are refused",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.DeleteNamed(cmd, cf, iamv1.NodeCredentialCollection, args)
		},
	}
	cmd.AddCommand(create, clikit.ListCmd(cf, iamv1.NodeCredentialCollection, "node credentials (never their tokens or keys)"), del)
	return cmd
}

// parseSince accepts a duration back from now ("1h") or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (30m, 24h) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
	}
	return t, nil
}

func newIAMAuditCmd(cf *clikit.ClientFlags) *cobra.Command {
	var since, until, principal, out string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--since 1h] [--principal user:alice] [-p PROJECT]",
		Short: "Show the audit log of mutating requests, oldest first",
		Long: `audit shows who changed what, when, and with what result: every create,
update, delete, status write, login, token exchange and password change.
Reading all of it needs iam.audit.list cluster-wide; with -p PROJECT,
iam.audit.list in that project suffices.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var opts iamclient.AuditOptions
			// The times are checked after -o and before connecting.
			open := func(ctx context.Context) (*clikit.Conn, context.Context, func(), error) {
				now := time.Now()
				opts = iamclient.AuditOptions{Principal: principal, Project: cf.ProjectFlag()}
				var err error
				if opts.Since, err = parseSince(since, now); err != nil {
					return nil, nil, nil, fmt.Errorf("--since: %w", err)
				}
				if opts.Until, err = parseSince(until, now); err != nil {
					return nil, nil, nil, fmt.Errorf("--until: %w", err)
				}
				return cf.Open(ctx)
			}
			return clikit.RunWith(cmd, out, open, func(ctx context.Context, c *clikit.Conn) (iamv1.AuditList, error) {
				ic := iamclient.New(c.Client)
				var items []iamv1.AuditRecord
				for len(items) < limit {
					opts.Limit = min(limit-len(items), iamv1.AuditMaxLimit)
					page, err := ic.Audit(ctx, opts)
					if err != nil {
						return iamv1.AuditList{}, err
					}
					items = append(items, page.Items...)
					if page.Continue == "" {
						break
					}
					opts.Continue = page.Continue
				}
				return iamv1.AuditList{Items: items}, nil
			}, clikit.Table(printAudit))
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only records after this: a duration back from now (1h) or an RFC 3339 time")
	cmd.Flags().StringVar(&until, "until", "", "only records before this (same forms as --since)")
	cmd.Flags().StringVar(&principal, "principal", "", "only this principal, e.g. user:alice or serviceaccount:dev/ci")
	cmd.Flags().IntVar(&limit, "limit", 200, "at most this many records")
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// printAudit prints audit records as a table.
func printAudit(w io.Writer, l iamv1.AuditList) error {
	items := l.Items
	if len(items) == 0 {
		fmt.Fprintln(w, "No audit records found.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tPRINCIPAL\tVERB\tRESOURCE\tCODE\tSOURCE")
	for _, r := range items {
		res := r.Collection
		if r.Project != "" {
			res = r.Project + "/" + res
		}
		if r.Name != "" {
			res += "/" + r.Name
		}
		if res == "" {
			res = r.Path
		}
		p := r.Principal
		if p == "" {
			p = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", r.Time.Local().Format("2006-01-02 15:04:05"), p, r.Verb, res, r.Code, r.SourceIP)
	}
	return tw.Flush()
}

func newIAMWhoAmICmd(cf *clikit.ClientFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show who you are and which roles you hold",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (*iamv1.WhoAmI, error) {
				return iamclient.New(c.Client).WhoAmI(ctx)
			}, clikit.Table(printWhoAmI))
		},
	}
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// printWhoAmI prints a principal and its roles for people.
func printWhoAmI(w io.Writer, me *iamv1.WhoAmI) error {
	fmt.Fprintf(w, "Principal:     %s\n", me.Principal)
	if me.Superuser {
		fmt.Fprintln(w, "Superuser:     yes (break-glass token: authorization is bypassed)")
	}
	if !me.ExpiresAt.IsZero() {
		fmt.Fprintf(w, "Token expires: %s\n", me.ExpiresAt.Local().Format("2006-01-02 15:04:05 MST"))
	}
	if len(me.ClusterRoles) > 0 {
		fmt.Fprintf(w, "Cluster roles: %s\n", strings.Join(me.ClusterRoles, ", "))
	}
	projects := make([]string, 0, len(me.ProjectRoles))
	for p := range me.ProjectRoles {
		projects = append(projects, p)
	}
	sort.Strings(projects)
	for _, p := range projects {
		fmt.Fprintf(w, "Project %s: %s\n", p, strings.Join(me.ProjectRoles[p], ", "))
	}
	return nil
}

func newIAMRotateCmd(cf *clikit.ClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-signing-key",
		Short: "Sign new tokens with a new key now (tokens signed by the old key stay valid until they expire)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.Run(cmd, cf, "", func(ctx context.Context, c *clikit.Conn) (string, error) {
				return iamclient.New(c.Client).RotateSigningKey(ctx)
			}, clikit.Table(func(w io.Writer, kid string) error {
				_, err := fmt.Fprintf(w, "New signing key %s is active.\n", kid)
				return err
			}))
		},
	}
}
