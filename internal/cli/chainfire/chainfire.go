// Package chainfire holds the operator verbs of chainfire, `ultracloud
// chainfire status|member|snapshot`. They speak the member's etcd v3 API
// through internal/chainfire/client (connection, member operations,
// snapshot save), and never import the member itself: restoring a data
// directory, which needs the member's storage code, is passed in by the
// command tree (Offline).
package chainfire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/chainfire/client"
	"github.com/ultracloud/ultracloud/internal/cli/clikit"
)

// Offline are the verbs that write a member's data directory instead of
// talking to a cluster.
type Offline struct {
	// Restore creates the data directory dataDir of member memberName of a
	// new cluster (initialCluster: name=peerURL entries; token: its
	// cluster token) from a snapshot file.
	Restore func(snapshotPath, dataDir, memberName string, initialCluster []string, token string) error
}

// flags say how to reach a chainfire cluster's etcd v3 API.
type flags struct {
	env                   clikit.Env
	endpoints             string
	caFile, certFile, key string
	timeout               time.Duration
}

func (f *flags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.endpoints, "endpoints", "", "comma-separated chainfire client URLs (env ULTRACLOUD_CHAINFIRE_ENDPOINTS; default http://127.0.0.1:2379)")
	pf.StringVar(&f.caFile, "cacert", "", "CA certificate of the cluster (for https endpoints)")
	pf.StringVar(&f.certFile, "cert", "", "client certificate (when the cluster requires client certificates)")
	pf.StringVar(&f.key, "key", "", "client key")
	pf.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the cluster")
}

// connect returns an etcd v3 client for the cluster.
func (f *flags) connect() (*clientv3.Client, error) {
	eps := f.endpoints
	if eps == "" {
		eps = f.env.Getenv("ULTRACLOUD_CHAINFIRE_ENDPOINTS")
	}
	if eps == "" {
		eps = "http://127.0.0.1:2379"
	}
	return client.New(client.Config{Endpoints: strings.Split(eps, ","), DialTimeout: f.timeout, CAFile: f.caFile, CertFile: f.certFile, KeyFile: f.key})
}

// session connects and returns the client, a context bounded by --timeout,
// and a function that releases both.
func (f *flags) session(parent context.Context) (*clientv3.Client, context.Context, func(), error) {
	c, err := f.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(parent, f.timeout)
	return c, ctx, func() { cancel(); c.Close() }, nil
}

// NewCmd is `ultracloud chainfire`.
func NewCmd(env clikit.Env, off Offline) *cobra.Command {
	f := &flags{env: env}
	cmd := &cobra.Command{
		Use:   "chainfire",
		Short: "Operate the chainfire coordination store (members, snapshots, status)",
	}
	f.register(cmd)
	cmd.AddCommand(newStatusCmd(f), newMemberCmd(f), newSnapshotCmd(f, off))
	return cmd
}

func newStatusCmd(f *flags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each endpoint's leader, revision, raft term and database size",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.RunWith(cmd, out, f.session, memberStatus, clikit.Table(printStatus))
		},
	}
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// statusRow is one endpoint in `chainfire status`.
type statusRow struct {
	Endpoint  string `json:"endpoint"`
	Member    string `json:"member"`
	Leader    string `json:"leader"`
	Revision  int64  `json:"revision"`
	RaftTerm  uint64 `json:"raftTerm"`
	DBSize    int64  `json:"dbSizeBytes"`
	DBInUse   int64  `json:"dbSizeInUseBytes"`
	Error     string `json:"error,omitempty"`
	IsLearner bool   `json:"isLearner,omitempty"`
}

// memberStatus asks every endpoint for its status.
func memberStatus(ctx context.Context, c *clientv3.Client) ([]statusRow, error) {
	members, err := client.MemberList(ctx, c)
	if err != nil {
		return nil, err
	}
	names := map[uint64]string{}
	var rows []statusRow
	for _, ep := range c.Endpoints() {
		st, err := c.Status(ctx, ep)
		if err != nil {
			rows = append(rows, statusRow{Endpoint: ep, Error: err.Error()})
			continue
		}
		for _, m := range members {
			var id uint64
			if _, err := fmt.Sscanf(m.ID, "%x", &id); err == nil {
				names[id] = m.Name
			}
		}
		rows = append(rows, statusRow{Endpoint: ep, Member: names[st.Header.MemberId], Leader: names[st.Leader],
			Revision: st.Header.Revision, RaftTerm: st.RaftTerm, DBSize: st.DbSize, DBInUse: st.DbSizeInUse, IsLearner: st.IsLearner})
	}
	return rows, nil
}

func printStatus(w io.Writer, rows []statusRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tMEMBER\tLEADER\tREVISION\tRAFT TERM\tDB SIZE\tERROR")
	for _, r := range rows {
		e := r.Error
		if e == "" {
			e = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Endpoint, r.Member, r.Leader, r.Revision, r.RaftTerm, clikit.HumanBytes(r.DBSize), e)
	}
	return tw.Flush()
}

func printMembers(w io.Writer, ms []client.Member) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPEER URLS\tCLIENT URLS\tLEARNER")
	for _, m := range ms {
		name := m.Name
		if name == "" {
			name = "(not started)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", m.ID, name, strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ","), m.IsLearner)
	}
	return tw.Flush()
}

func newMemberCmd(f *flags) *cobra.Command {
	var out string
	cmd := &cobra.Command{Use: "member", Short: "List, add and remove chainfire members"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.RunWith(cmd, out, f.session, client.MemberList, clikit.Table(printMembers))
		},
	}
	clikit.OutputFlag(list, &out)
	add := &cobra.Command{
		Use:   "add NAME PEER_URL",
		Short: "Announce a new member; then start it with the printed initialCluster and initialState: existing",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.RunWith(cmd, "", f.session, func(ctx context.Context, c *clientv3.Client) (client.AddedMember, error) {
				return client.MemberAdd(ctx, c, args[0], args[1])
			}, clikit.Table(func(w io.Writer, m client.AddedMember) error {
				fmt.Fprintf(w, "Member %s added (ID %s). Start it with this chainfire config:\n", m.Name, m.ID)
				fmt.Fprintf(w, "  name: %s\n  peerURL: %s\n  initialState: existing\n  initialCluster:\n", m.Name, m.PeerURL)
				for _, e := range m.InitialCluster {
					fmt.Fprintf(w, "    - %s\n", e)
				}
				return nil
			}))
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME_OR_ID",
		Short: "Remove a member from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.RunWith(cmd, "", f.session, func(ctx context.Context, c *clientv3.Client) (string, error) {
				return args[0], client.MemberRemove(ctx, c, args[0])
			}, clikit.Table(func(w io.Writer, name string) error {
				_, err := fmt.Fprintf(w, "Member %s removed.\n", name)
				return err
			}))
		},
	}
	cmd.AddCommand(list, add, remove)
	return cmd
}

func newSnapshotCmd(f *flags, off Offline) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save a snapshot of the store, or restore a member's data directory from one"}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot from one endpoint to FILE (mode 0600)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			// A snapshot of a large store can take longer than other calls.
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*f.timeout)
			defer cancel()
			fmt.Fprintf(cmd.ErrOrStderr(), "Saving snapshot to %s ...\n", args[0])
			info, err := client.SnapshotSave(ctx, c, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Saved %s: revision %d, %d keys, %s.\n", info.Path, info.Revision, info.Keys, clikit.HumanBytes(info.SizeBytes))
			return nil
		},
	}
	var dataDir, name, token string
	var initial []string
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR --name NAME --initial-cluster name=peerURL,... [--cluster-token T]",
		Short: "Create a member's data directory from a snapshot (offline; the directory must not exist)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" || name == "" {
				return errors.New("--data-dir and --name are required")
			}
			if len(initial) == 0 {
				return errors.New("--initial-cluster is required (e.g. n1=https://10.0.0.1:2380,n2=...)")
			}
			if err := off.Restore(args[0], dataDir, name, initial, token); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Restored %s into %s for member %s. Start every member of the new cluster from its restored directory.\n", args[0], dataDir, name)
			return nil
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "", "the member's chainfire data directory to create")
	restore.Flags().StringVar(&name, "name", "", "the member's name")
	restore.Flags().StringSliceVar(&initial, "initial-cluster", nil, "every member of the restored cluster as name=peerURL")
	restore.Flags().StringVar(&token, "cluster-token", client.DefaultClusterToken, "the restored cluster's token")
	cmd.AddCommand(save, restore)
	return cmd
}
