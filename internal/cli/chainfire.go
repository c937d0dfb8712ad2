package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/chainfire"
)

// chainfireFlags say how to reach a chainfire cluster's etcd v3 API.
type chainfireFlags struct {
	env                   Env
	endpoints             string
	caFile, certFile, key string
	timeout               time.Duration
}

func (f *chainfireFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.endpoints, "endpoints", "", "comma-separated chainfire client URLs (env ULTRACLOUD_CHAINFIRE_ENDPOINTS; default http://127.0.0.1:2379)")
	pf.StringVar(&f.caFile, "cacert", "", "CA certificate of the cluster (for https endpoints)")
	pf.StringVar(&f.certFile, "cert", "", "client certificate (when the cluster requires client certificates)")
	pf.StringVar(&f.key, "key", "", "client key")
	pf.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the cluster")
}

// connect returns an etcd v3 client for the cluster.
func (f *chainfireFlags) connect() (*clientv3.Client, error) {
	eps := f.endpoints
	if eps == "" {
		eps = f.env.Getenv("ULTRACLOUD_CHAINFIRE_ENDPOINTS")
	}
	if eps == "" {
		eps = "http://127.0.0.1:2379"
	}
	// The etcd client logs JSON through zap; the CLI reports errors itself.
	cfg := clientv3.Config{Endpoints: strings.Split(eps, ","), DialTimeout: f.timeout, Logger: zap.NewNop()}
	if f.caFile != "" || f.certFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.caFile != "" {
			pem, err := os.ReadFile(f.caFile)
			if err != nil {
				return nil, fmt.Errorf("reading --cacert: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--cacert %s holds no PEM certificate", f.caFile)
			}
			tc.RootCAs = pool
		}
		if f.certFile != "" || f.key != "" {
			cert, err := tls.LoadX509KeyPair(f.certFile, f.key)
			if err != nil {
				return nil, fmt.Errorf("loading --cert/--key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to chainfire at %s: %w", eps, err)
	}
	return c, nil
}

// session connects and returns the client, a context bounded by --timeout,
// and a function that releases both.
func (f *chainfireFlags) session(parent context.Context) (*clientv3.Client, context.Context, func(), error) {
	c, err := f.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(parent, f.timeout)
	return c, ctx, func() { cancel(); c.Close() }, nil
}

func newChainfireCmd(env Env) *cobra.Command {
	f := &chainfireFlags{env: env}
	cmd := &cobra.Command{
		Use:   "chainfire",
		Short: "Operate the chainfire coordination store (members, snapshots, status)",
	}
	f.register(cmd)
	cmd.AddCommand(newChainfireStatusCmd(f), newChainfireMemberCmd(f), newChainfireSnapshotCmd(f))
	return cmd
}

func newChainfireStatusCmd(f *chainfireFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each endpoint's leader, revision, raft term and database size",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			of, err := parseOutput(out)
			if err != nil {
				return err
			}
			c, ctx, done, err := f.session(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			members, err := chainfire.MemberList(ctx, c)
			if err != nil {
				return err
			}
			names := map[uint64]string{}
			type row struct {
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
			var rows []row
			for _, ep := range c.Endpoints() {
				st, err := c.Status(ctx, ep)
				if err != nil {
					rows = append(rows, row{Endpoint: ep, Error: err.Error()})
					continue
				}
				for _, m := range members {
					var id uint64
					if _, err := fmt.Sscanf(m.ID, "%x", &id); err == nil {
						names[id] = m.Name
					}
				}
				rows = append(rows, row{Endpoint: ep, Member: names[st.Header.MemberId], Leader: names[st.Leader],
					Revision: st.Header.Revision, RaftTerm: st.RaftTerm, DBSize: st.DbSize, DBInUse: st.DbSizeInUse, IsLearner: st.IsLearner})
			}
			w := cmd.OutOrStdout()
			if of != "table" {
				return printData(w, of, rows)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "ENDPOINT\tMEMBER\tLEADER\tREVISION\tRAFT TERM\tDB SIZE\tERROR")
			for _, r := range rows {
				e := r.Error
				if e == "" {
					e = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Endpoint, r.Member, r.Leader, r.Revision, r.RaftTerm, humanBytes(r.DBSize), e)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func newChainfireMemberCmd(f *chainfireFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{Use: "member", Short: "List, add and remove chainfire members"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			of, err := parseOutput(out)
			if err != nil {
				return err
			}
			c, ctx, done, err := f.session(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			ms, err := chainfire.MemberList(ctx, c)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if of != "table" {
				return printData(w, of, ms)
			}
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
		},
	}
	list.Flags().StringVarP(&out, "output", "o", "table", "output format: table, json or yaml")
	add := &cobra.Command{
		Use:   "add NAME PEER_URL",
		Short: "Announce a new member; then start it with the printed initialCluster and initialState: existing",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := f.session(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			m, err := chainfire.MemberAdd(ctx, c, args[0], args[1])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Member %s added (ID %s). Start it with this chainfire config:\n", m.Name, m.ID)
			fmt.Fprintf(w, "  name: %s\n  peerURL: %s\n  initialState: existing\n  initialCluster:\n", m.Name, m.PeerURL)
			for _, e := range m.InitialCluster {
				fmt.Fprintf(w, "    - %s\n", e)
			}
			return nil
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME_OR_ID",
		Short: "Remove a member from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := f.session(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if err := chainfire.MemberRemove(ctx, c, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Member %s removed.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(list, add, remove)
	return cmd
}

func newChainfireSnapshotCmd(f *chainfireFlags) *cobra.Command {
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
			info, err := chainfire.SnapshotSave(ctx, c, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Saved %s: revision %d, %d keys, %s.\n", info.Path, info.Revision, info.Keys, humanBytes(info.SizeBytes))
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
			if err := chainfire.SnapshotRestore(args[0], dataDir, name, initial, token); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Restored %s into %s for member %s. Start every member of the new cluster from its restored directory.\n", args[0], dataDir, name)
			return nil
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "", "the member's chainfire data directory to create")
	restore.Flags().StringVar(&name, "name", "", "the member's name")
	restore.Flags().StringSliceVar(&initial, "initial-cluster", nil, "every member of the restored cluster as name=peerURL")
	restore.Flags().StringVar(&token, "cluster-token", chainfire.Default().ClusterToken, "the restored cluster's token")
	cmd.AddCommand(save, restore)
	return cmd
}

// humanBytes renders a size as operators read it.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
