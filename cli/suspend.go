package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/spf13/cobra"
)

func newSuspendCmd(g *globals) *cobra.Command {
	return newSuspendResumeCmd(g, true)
}

func newResumeCmd(g *globals) *cobra.Command {
	return newSuspendResumeCmd(g, false)
}

// newSuspendResumeCmd builds `cube suspend` (suspend) or `cube resume`:
// ask for each instance, then wait for its phase unless --wait=false.
func newSuspendResumeCmd(g *globals, suspend bool) *cobra.Command {
	var wait bool
	var timeout time.Duration
	verb, want, ing := "resume", v1.PhaseRunning, "resuming"
	short := "Run suspended instances again, where they left off"
	long := `Restore suspended microVM instances from the state their node saved: every
process continues where it was, with the same IP, files and memory. Its
containers' output goes on in the same logs. resume waits until each
instance is Running again (it prints the name), unless --wait=false.
Only a Suspended instance can be resumed; cube suspend suspends one.`
	example := `  cube resume web
  cube resume web worker --timeout 30s
  cube resume --wait=false web && cube wait web --for running`
	if suspend {
		verb, want, ing = "suspend", v1.PhaseSuspended, "suspending"
		short = "Save running microVM instances to disk and stop them"
		long = `Suspend running microVM instances: the node saves each VM's whole state
(memory, devices, every process) to its disk and stops it, so it uses no CPU
or memory and is not billed until resumed. A suspended instance keeps its
IP, its writable layer and its logs, survives a restart of its node's
cube up, and shows Suspended in cube ps. cube resume runs it again where it
left off. suspend waits until each instance is Suspended (it prints the
name), unless --wait=false.

Only Running instances of runtime microvm can be suspended (runc keeps no
whole state to save). While suspended, exec is refused; logs still read;
cube rm --force removes it with its saved state.`
		example = `  cube suspend web
  cube suspend web worker --timeout 2m
  cube suspend --wait=false web && cube wait web --for suspended
  cube events web            # Suspending, Suspended, Resuming, Resumed with their times`
	}
	cmd := &cobra.Command{
		Use:     verb + " NAME...",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ask := c.ResumeInstance
			if suspend {
				ask = c.SuspendInstance
			}
			var failed []string
			for _, name := range args {
				if err := suspendOne(cmd.Context(), g, c, name, ask, wait, want, ing, timeout); err != nil {
					fmt.Fprintf(g.stderr, "cube: %s: %v\n", name, err)
					failed = append(failed, name)
					continue
				}
				fmt.Fprintln(g.stdout, name)
			}
			if len(failed) > 0 {
				return fmt.Errorf("could not %s: %s", verb, strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the instance is "+strings.ToLower(string(want)))
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait (e.g. 30s, 5m)")
	return cmd
}

// suspendOne asks for one instance and, with wait, waits for the phase,
// telling on stderr what it waits for and how long it took.
func suspendOne(ctx context.Context, g *globals, c *client.Client, name string, ask func(context.Context, string) (*v1.Instance, error),
	wait bool, want v1.Phase, ing string, timeout time.Duration) error {
	if _, err := ask(ctx, name); err != nil {
		return err
	}
	if !wait {
		return nil
	}
	fmt.Fprintf(g.stderr, "%s %s...\n", ing, name)
	start := time.Now()
	if _, err := waitFor(ctx, c, name, []string{strings.ToLower(string(want))}, timeout); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "%s %s in %s\n", name, strings.ToLower(string(want)), time.Since(start).Round(time.Millisecond))
	return nil
}
