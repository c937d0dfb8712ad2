package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/logging"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// addNodeFlags adds a flag for every config field the node offers as one
// (node.Flags: the core's and the components' listeners).
func addNodeFlags(fs *pflag.FlagSet) {
	for _, f := range node.Flags() {
		fs.String(f.Name, "", f.Usage+" (config field "+f.Field+", env "+config.EnvName(f.Field)+")")
	}
}

// loadNodeConfig merges defaults < file < env < flags and validates.
func loadNodeConfig(env Env, fs *pflag.FlagSet, file string, defaults node.Config) (node.Config, error) {
	cfg := defaults
	if file != "" {
		if err := config.LoadFile(&cfg, file); err != nil {
			return cfg, err
		}
	}
	if err := config.LoadEnv(&cfg, env.LookupEnv); err != nil {
		return cfg, err
	}
	for _, f := range node.Flags() {
		if fl := fs.Lookup(f.Name); fl != nil && fl.Changed {
			if err := config.Set(&cfg, f.Field, fl.Value.String()); err != nil {
				return cfg, fmt.Errorf("flag --%s: %w", f.Name, err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func defaultDataDir(env Env) string {
	if d := env.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "ultracloud")
	}
	home := env.Getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".local", "share", "ultracloud")
}

func newUpCmd(env Env) *cobra.Command {
	var writeClient bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run every component in one process on loopback (single-node dev cloud)",
		Long: `up runs an all-in-one UltraCloud node in the foreground, with its data in
--data-dir (default $XDG_DATA_HOME/ultracloud). It prints the endpoints and
writes a client config (mode 0600) so the CLI on this machine works at once.
Stop it with Ctrl-C; it shuts down cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadNodeConfig(env, cmd.Flags(), "", node.SingleNodeDefault(defaultDataDir(env)))
			if err != nil {
				return err
			}
			return runNode(cmd.Context(), env, cfg, func(n *node.Node) error {
				if !writeClient {
					return nil
				}
				path := clikit.ClientConfigPath(env)
				cc := clikit.ClientConfig{Endpoint: n.APIURL()}
				if old, err := clikit.ReadClientConfig(path); err == nil && old.Endpoint == cc.Endpoint {
					cc.Project = old.Project
				}
				// The CLI acts as the admin user; if that user was deleted
				// or disabled, it falls back to the break-glass token.
				who := "user admin"
				if t, err := n.AdminCredentials(cmd.Context()); err == nil {
					creds := iamclient.CredentialsFrom(t)
					cc.Credentials = &creds
				} else {
					cc.Token = n.Token()
					who = "the break-glass admin token (user admin is missing or disabled)"
				}
				if err := clikit.WriteClientConfig(path, cc); err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "Client config:  %s (mode 0600, acting as %s)\n", path, who)
				return nil
			})
		},
	}
	addNodeFlags(cmd.Flags())
	cmd.Flags().BoolVar(&writeClient, "write-client-config", true, "write the CLI's client config for this node")
	return cmd
}

func newServerCmd(env Env) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "server --config node.yaml",
		Short: "Run a node with the roles its config gives",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("--config is required (a node.yaml; see docs/configuration.md)")
			}
			cfg, err := loadNodeConfig(env, cmd.Flags(), file, node.Default())
			if err != nil {
				return err
			}
			return runNode(cmd.Context(), env, cfg, nil)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "node config file (YAML)")
	addNodeFlags(cmd.Flags())
	return cmd
}

// runNode runs a node in the foreground until the context ends (SIGINT or
// SIGTERM in main) and prints its endpoints once it is ready.
func runNode(ctx context.Context, env Env, cfg node.Config, onReady func(*node.Node) error) error {
	log, err := logging.New(env.Stderr, logging.Options{Level: cfg.Log.Level, Format: cfg.Log.Format})
	if err != nil {
		return err
	}
	log = log.With("node", cfg.Node)
	n := node.New(cfg, log)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-n.Ready():
	}
	if onReady != nil {
		if err := onReady(n); err != nil {
			cancel(err)
			return errors.Join(err, <-done)
		}
	}
	fmt.Fprintf(env.Stdout, "API:            %s\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "Metrics:        %s/metrics\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "OpenAPI:        %s/openapi.json\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "Data directory: %s\n", cfg.DataDir)
	fmt.Fprintf(env.Stdout, "Admin token:    %s (mode 0600; break-glass, bypasses authorization)\n", cfg.API.TokenFile)
	if pw := n.InitialAdminPassword(); pw != "" {
		fmt.Fprintf(env.Stdout, "Admin user:     admin, password %s\n", pw)
		fmt.Fprintln(env.Stdout, "                (shown only now; change it with `ultracloud iam user set-password admin`)")
	}
	fmt.Fprintf(env.Stdout, "UltraCloud node %q is ready.\n", cfg.Node)
	fmt.Fprintln(env.Stdout, "Try: ultracloud status; ultracloud get projects. Press Ctrl-C to stop.")
	return <-done
}
