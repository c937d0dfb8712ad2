// Command ultracloud is UltraCloud's one binary: daemons and CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ultracloud/ultracloud/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.OSEnv())
	stop()
	os.Exit(code)
}
