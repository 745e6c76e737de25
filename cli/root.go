// Package cli implements the `cube` verbs. Each verb is a thin layer over
// client/ (or, for `up`, `shim` and `bench`, over the packages they run);
// it parses flags, prints data to stdout and progress to stderr, and maps
// failures to Docker's exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cube-platform/cube/client"
	"github.com/spf13/cobra"
)

// Exit codes, as Docker has them.
const (
	ExitCubeError    = 125 // cube itself or the server failed
	ExitCannotInvoke = 126
	ExitNotFound     = 127
)

// ExitError carries an exit code out of a command without printing.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// globals are flags every verb shares.
type globals struct {
	contextName string
	configPath  string
	stdout      io.Writer
	stderr      io.Writer
	stdin       io.Reader
}

// client builds an API client from the config file and environment.
func (g *globals) client() (*client.Client, error) {
	path := g.configPath
	if path == "" {
		path = client.DefaultConfigPath()
	}
	cfg, err := client.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	ctx, err := cfg.Resolve(g.contextName)
	if err != nil {
		return nil, err
	}
	return client.New(ctx.Server, ctx.Token), nil
}

// NewRoot builds the `cube` command tree.
func NewRoot() *cobra.Command {
	g := &globals{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	root := &cobra.Command{
		Use:   "cube",
		Short: "Cube runs containers as serverless instances",
		Long: `Cube runs container images as instances: each instance gets its own sandbox
(namespaces, cgroups, a writable layer over a shared image) and its own IP.

Start everything on this machine with ` + "`cube up`" + `, then:
  cube image import busybox.tar
  cube run --name web -p 8080:80 busybox -- httpd -f -p 80
  cube ps`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.contextName, "context", "", "client config context to use (default: the current one)")
	root.PersistentFlags().StringVar(&g.configPath, "config", "", "client config file (default $CUBE_CONFIG or ~/.config/cube/config.yaml)")
	root.AddCommand(
		newUpCmd(g), newRunCmd(g), newPsCmd(g), newGetCmd(g), newWaitCmd(g), newLogsCmd(g),
		newExecCmd(g), newApplyCmd(g), newRmCmd(g), newSuspendCmd(g), newResumeCmd(g), newNodesCmd(g), newImageCmd(g),
		newBenchCmd(g), newTenantCmd(g), newTokenCmd(g), newEventsCmd(g), newShimCmd(),
	)
	root.AddCommand(newDiffCmd(g), newConfigCmd(g))
	return root
}

// Main runs the CLI and returns the process exit code.
func Main(args []string) int {
	root := NewRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintln(os.Stderr, "cube: "+err.Error())
	return ExitCubeError
}
