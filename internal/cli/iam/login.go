package iam

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// NewLoginCmd is `ultracloud login`.
func NewLoginCmd(cf *clikit.ClientFlags) *cobra.Command {
	var username string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in with a user name and password; saves refreshable credentials (mode 0600)",
		Long: `login exchanges a user name and password for a short-lived access token and a
refresh token, and saves both in the client config (~/.config/ultracloud/config.yaml,
mode 0600) with the endpoint. Later commands use them and refresh them by themselves.
Without --password-stdin the password is prompted for on the terminal.`,
		Example: `  ultracloud login --endpoint http://10.0.0.11:7700 -u alice
  echo "$PASSWORD" | ultracloud login -u ci --password-stdin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env := cf.Env()
			c, err := cf.Resolved()
			if err != nil {
				return err
			}
			if username == "" {
				if username, err = clikit.PromptLine(env, "Username: "); err != nil {
					return err
				}
			}
			var password string
			if passwordStdin {
				password, err = clikit.ReadSecretStdin(cmd.InOrStdin())
			} else {
				password, err = clikit.PromptPassword(env, "Password: ")
			}
			if err != nil {
				return err
			}
			cl, err := client.New(client.Config{Endpoint: c.Endpoint, UserAgent: "ultracloud-cli"})
			if err != nil {
				return err
			}
			t, err := iamclient.New(cl).Login(cmd.Context(), username, password)
			if err != nil {
				return fmt.Errorf("login to %s: %w", c.Endpoint, err)
			}
			path := clikit.ClientConfigPath(env)
			saved, err := clikit.ReadClientConfig(path)
			if err != nil {
				return err
			}
			creds := iamclient.CredentialsFrom(t)
			out := clikit.ClientConfig{Endpoint: c.Endpoint, Project: c.Project, Credentials: &creds}
			if out.Project == "" && saved.Endpoint == c.Endpoint {
				out.Project = saved.Project
			}
			if err := clikit.WriteClientConfig(path, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s as %s. Credentials saved in %s (mode 0600).\n", c.Endpoint, t.Principal, path)
			return nil
		},
	}
	cmd.Flags().StringVarP(&username, "username", "u", "", "user name (prompted for if omitted)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

// NewLogoutCmd is `ultracloud logout`.
func NewLogoutCmd(cf *clikit.ClientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the saved refresh token and remove the saved credentials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := clikit.ClientConfigPath(cf.Env())
			saved, err := clikit.ReadClientConfig(path)
			if err != nil {
				return err
			}
			if saved.Credentials == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "Not logged in.")
				return nil
			}
			if cl, err := client.New(client.Config{Endpoint: saved.Endpoint}); err == nil && saved.Credentials.RefreshToken != "" {
				if err := iamclient.New(cl).Logout(cmd.Context(), saved.Credentials.RefreshToken); err != nil {
					fmt.Fprintf(cf.Env().Stderr, "warning: could not revoke the refresh token at %s: %v\n", saved.Endpoint, err)
				}
			}
			saved.Credentials = nil
			if err := clikit.WriteClientConfig(path, saved); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged out; credentials removed from %s.\n", path)
			return nil
		},
	}
}
