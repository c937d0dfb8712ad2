package clikit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	yaml "go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// ClientConfig is the CLI's saved connection (~/.config/ultracloud/config.yaml).
// It holds credentials, so it is written with mode 0600.
type ClientConfig struct {
	// Endpoint is the API base URL.
	Endpoint string `yaml:"endpoint"`
	// Token is a static bearer token (e.g. the break-glass admin token).
	// When set it is used instead of Credentials.
	Token string `yaml:"token,omitempty"`
	// Project is the default project for project-scoped commands.
	Project string `yaml:"project,omitempty"`
	// Credentials are the tokens of `ultracloud login` (or of the admin
	// user, written by `ultracloud up`); the CLI refreshes them by itself
	// and saves the new ones here.
	Credentials *iamclient.Credentials `yaml:"credentials,omitempty"`
}

// ClientConfigPath is $ULTRACLOUD_CLIENT_CONFIG, else
// $XDG_CONFIG_HOME/ultracloud/config.yaml, else ~/.config/ultracloud/config.yaml.
func ClientConfigPath(env Env) string {
	if p := env.Getenv("ULTRACLOUD_CLIENT_CONFIG"); p != "" {
		return p
	}
	dir := env.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := env.Getenv("HOME")
		if home == "" {
			home, _ = os.UserHomeDir()
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "ultracloud", "config.yaml")
}

// ReadClientConfig reads the client config at path; a missing file is an
// empty config.
func ReadClientConfig(path string) (ClientConfig, error) {
	var c ClientConfig
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading client config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("client config %s: %w", path, err)
	}
	return c, nil
}

// WriteClientConfig writes c at path with mode 0600 (it holds a token),
// atomically.
func WriteClientConfig(path string, c ClientConfig) error {
	b, err := yaml.Marshal(&c)
	if err != nil {
		return fmt.Errorf("encoding client config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("writing client config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing client config: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing client config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing client config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing client config: %w", err)
	}
	return nil
}

// ClientFlags are the persistent connection flags of client commands
// (--endpoint, --token, -p), and the connection they make.
type ClientFlags struct {
	env      Env
	endpoint string
	token    string
	project  string
}

// NewClientFlags returns the connection flags of commands run in env;
// Register adds them to the command tree.
func NewClientFlags(env Env) *ClientFlags { return &ClientFlags{env: env} }

// Env is the environment the commands run in.
func (f *ClientFlags) Env() Env { return f.env }

// Register adds the flags to root, for it and every subcommand.
func (f *ClientFlags) Register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&f.endpoint, "endpoint", "", "API endpoint URL (env ULTRACLOUD_ENDPOINT; default from the client config)")
	pf.StringVar(&f.token, "token", "", "bearer token (env ULTRACLOUD_TOKEN; default from the client config)")
	pf.StringVarP(&f.project, "project", "p", "", "project for project-scoped kinds (env ULTRACLOUD_PROJECT)")
}

// ProjectFlag is -p as given on the command line (not the environment or
// the client config).
func (f *ClientFlags) ProjectFlag() string { return f.project }

// Resolved is the effective connection: flags > environment > config file.
func (f *ClientFlags) Resolved() (ClientConfig, error) {
	c, err := ReadClientConfig(ClientConfigPath(f.env))
	if err != nil {
		return c, err
	}
	pick := func(flag, envName string, cur *string) {
		if v := f.env.Getenv(envName); v != "" {
			*cur = v
		}
		if flag != "" {
			*cur = flag
		}
	}
	pick(f.endpoint, "ULTRACLOUD_ENDPOINT", &c.Endpoint)
	pick(f.token, "ULTRACLOUD_TOKEN", &c.Token)
	pick(f.project, "ULTRACLOUD_PROJECT", &c.Project)
	return c, nil
}

// TokenSource returns the effective settings and the bearer tokens they
// authenticate with: a static token if one is given, else the saved
// credentials (refreshed automatically, and saved back to the client
// config when they are) if they belong to this endpoint, else none (a nil
// source). Client uses it; so do verbs that send requests the SDK does not
// make (a streamed upload, a WebSocket), so that they authenticate as the
// SDK does.
func (f *ClientFlags) TokenSource() (client.TokenSource, ClientConfig, error) {
	path := ClientConfigPath(f.env)
	saved, err := ReadClientConfig(path)
	if err != nil {
		return nil, saved, err
	}
	c, err := f.Resolved()
	if err != nil {
		return nil, c, err
	}
	switch {
	case c.Token != "":
		return client.StaticToken(c.Token), c, nil
	case c.Credentials != nil && c.Endpoint == saved.Endpoint && c.Endpoint != "":
		ts, err := iamclient.NewRefreshingTokenSource(c.Endpoint, nil, *c.Credentials, func(nc iamclient.Credentials) {
			if err := SaveCredentials(path, c.Endpoint, nc); err != nil {
				fmt.Fprintf(f.env.Stderr, "warning: could not save refreshed credentials: %v\n", err)
			}
		})
		if err != nil {
			return nil, c, err
		}
		return ts, c, nil
	}
	return nil, c, nil
}

// Client connects with the effective settings, authenticated with the
// tokens of TokenSource.
func (f *ClientFlags) Client() (*client.Client, ClientConfig, error) {
	ts, c, err := f.TokenSource()
	if err != nil {
		return nil, c, err
	}
	cl, err := client.New(client.Config{Endpoint: c.Endpoint, TokenSource: ts, UserAgent: "ultracloud-cli"})
	return cl, c, err
}

// Connect is Client as a Conn.
func (f *ClientFlags) Connect() (*Conn, error) {
	cl, cc, err := f.Client()
	if err != nil {
		return nil, err
	}
	return &Conn{Client: cl, Config: cc}, nil
}

// Open is Connect as an Opener for RunWith: the command's own context,
// nothing to release.
func (f *ClientFlags) Open(ctx context.Context) (*Conn, context.Context, func(), error) {
	c, err := f.Connect()
	if err != nil {
		return nil, nil, nil, err
	}
	return c, ctx, func() {}, nil
}

// SaveCredentials replaces the credentials in the client config at path,
// if it still belongs to endpoint.
func SaveCredentials(path, endpoint string, creds iamclient.Credentials) error {
	cur, err := ReadClientConfig(path)
	if err != nil {
		return err
	}
	if cur.Endpoint != endpoint {
		return nil
	}
	cur.Credentials = &creds
	return WriteClientConfig(path, cur)
}
