package clikit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// MaxSecretInput bounds passwords and secrets read from stdin.
const MaxSecretInput = 4096

// ReadSecretStdin reads a password from stdin up to the first newline
// (--password-stdin), as docker login does.
func ReadSecretStdin(in io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(in, MaxSecretInput+1))
	if err != nil {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	if len(b) > MaxSecretInput {
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

// PromptPassword asks for a password on the terminal without echo.
func PromptPassword(env Env, prompt string) (string, error) {
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

// PromptLine asks for one line on the terminal.
func PromptLine(env Env, prompt string) (string, error) {
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
