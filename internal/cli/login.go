package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ultracloud/ultracloud/pkg/client"
)

// maxSecretInput bounds passwords and secrets read from stdin.
const maxSecretInput = 4096

// readSecretStdin reads a password from stdin up to the first newline
// (--password-stdin), as docker login does.
func readSecretStdin(in io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(in, maxSecretInput+1))
	if err != nil {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	if len(b) > maxSecretInput {
		return "", errors.New("the password on stdin is too long")
	}
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.TrimSuffix(s, "\r")
	if s == "" {
		return "", errors.New("no password on stdin")
	}
	return s, nil
}

// terminal returns stdin as a terminal file descriptor, if it is one.
func terminal(env Env) (int, bool) {
	f, ok := env.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// promptPassword asks for a password on the terminal without echo.
func promptPassword(env Env, prompt string) (string, error) {
	fd, ok := terminal(env)
	if !ok {
		return "", errors.New("stdin is not a terminal: pass the password with --password-stdin")
	}
	fmt.Fprint(env.Stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(env.Stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(b), nil
}

// promptLine asks for one line on the terminal.
func promptLine(env Env, prompt string) (string, error) {
	if _, ok := terminal(env); !ok {
		return "", errors.New("stdin is not a terminal: pass --username")
	}
	fmt.Fprint(env.Stderr, prompt)
	line, err := bufio.NewReader(env.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("reading: %w", err)
	}
	return strings.TrimSpace(line), nil
}

func newLoginCmd(cf *clientFlags) *cobra.Command {
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
			env := cf.env
			c, err := cf.resolved()
			if err != nil {
				return err
			}
			if username == "" {
				if username, err = promptLine(env, "Username: "); err != nil {
					return err
				}
			}
			var password string
			if passwordStdin {
				password, err = readSecretStdin(cmd.InOrStdin())
			} else {
				password, err = promptPassword(env, "Password: ")
			}
			if err != nil {
				return err
			}
			cl, err := client.New(client.Config{Endpoint: c.Endpoint, UserAgent: "ultracloud-cli"})
			if err != nil {
				return err
			}
			t, err := cl.Login(cmd.Context(), username, password)
			if err != nil {
				return fmt.Errorf("login to %s: %w", c.Endpoint, err)
			}
			path := clientConfigPath(env)
			saved, err := readClientConfig(path)
			if err != nil {
				return err
			}
			creds := client.CredentialsFrom(t)
			out := ClientConfig{Endpoint: c.Endpoint, Project: c.Project, Credentials: &creds}
			if out.Project == "" && saved.Endpoint == c.Endpoint {
				out.Project = saved.Project
			}
			if err := writeClientConfig(path, out); err != nil {
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

func newLogoutCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the saved refresh token and remove the saved credentials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := clientConfigPath(cf.env)
			saved, err := readClientConfig(path)
			if err != nil {
				return err
			}
			if saved.Credentials == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "Not logged in.")
				return nil
			}
			if cl, err := client.New(client.Config{Endpoint: saved.Endpoint}); err == nil && saved.Credentials.RefreshToken != "" {
				if err := cl.Logout(cmd.Context(), saved.Credentials.RefreshToken); err != nil {
					fmt.Fprintf(cf.env.Stderr, "warning: could not revoke the refresh token at %s: %v\n", saved.Endpoint, err)
				}
			}
			saved.Credentials = nil
			if err := writeClientConfig(path, saved); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged out; credentials removed from %s.\n", path)
			return nil
		},
	}
}
