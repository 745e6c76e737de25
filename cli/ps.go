package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/errdefs"
	"github.com/spf13/cobra"
)

func statusText(in *v1.Instance) string {
	s := string(in.Status.Phase)
	if in.Metadata.DeletionTimestamp != nil {
		s = "Terminating"
	}
	switch {
	case in.Status.Reason != "":
		s += " (" + in.Status.Reason + ")"
	case in.Status.Phase == v1.PhaseRunning && in.Spec.Suspend:
		s += " (suspending)"
	case in.Status.Phase == v1.PhaseSuspended && !in.Spec.Suspend:
		s += " (resuming)"
	}
	return s
}

// runtimeText is an instance's runtime, with its VM's accelerator once a
// node runs it: "microvm/tcg", "runc".
func runtimeText(in *v1.Instance) string {
	rt := orDash(in.Spec.Runtime)
	if in.Status.Accelerator != "" {
		rt += "/" + in.Status.Accelerator
	}
	return rt
}

func images(in *v1.Instance) string {
	var out []string
	for _, c := range in.Spec.Containers {
		out = append(out, c.Image)
	}
	return strings.Join(out, ",")
}

func restarts(in *v1.Instance) int {
	n := 0
	for _, c := range in.Status.Containers {
		n += c.RestartCount
	}
	return n
}

func printInstances(g *globals, format string, items []*v1.Instance, list bool) error {
	names := make([]string, len(items))
	for i, in := range items {
		names[i] = in.Metadata.Name
	}
	var data any = items
	if !list && len(items) == 1 {
		data = items[0]
	}
	if done, err := printData(g.stdout, format, data, names); done {
		return err
	}
	tw := newTable(g.stdout)
	now := time.Now()
	if format == "wide" {
		fmt.Fprintln(tw, "NAME\tSTATUS\tNODE\tIP\tAGE\tIMAGE\tRUNTIME\tCPU\tMEMORY\tRESTARTS\tMESSAGE")
	} else {
		fmt.Fprintln(tw, "NAME\tSTATUS\tNODE\tIP\tAGE\tIMAGE\tRUNTIME")
	}
	for _, in := range items {
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", in.Metadata.Name, statusText(in), orDash(in.Status.Node), orDash(in.Status.IP), age(in.Metadata.CreationTimestamp, now), images(in), runtimeText(in))
		if format == "wide" {
			cpu, mem := in.Requests()
			row += fmt.Sprintf("\t%s\t%s\t%d\t%s", v1.FormatCPU(cpu), v1.FormatMemory(mem), restarts(in), in.Status.Message)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

func newPsCmd(g *globals) *cobra.Command {
	var all, quiet bool
	var filters []string
	var output string
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List instances",
		Long:  "List live instances (Pending to Running); -a includes finished ones.",
		Example: `  cube ps
  cube ps -a --filter status=Failed
  cube ps -q --filter label=app=web
  cube ps -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			opts := client.ListOptions{}
			var labels, fields []string
			for _, f := range filters {
				k, v, ok := strings.Cut(f, "=")
				if !ok {
					return fmt.Errorf("--filter %q: want key=value (label=, status=, node=, name=)", f)
				}
				switch k {
				case "label":
					labels = append(labels, v)
				case "status":
					fields = append(fields, "status.phase="+capitalize(v))
					all = true
				case "node":
					fields = append(fields, "status.node="+v)
				case "name":
					fields = append(fields, "metadata.name="+v)
				default:
					return fmt.Errorf("--filter %q: unknown key %q (use label, status, node or name)", f, k)
				}
			}
			opts.LabelSelector, opts.FieldSelector = strings.Join(labels, ","), strings.Join(fields, ",")
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.ListInstances(cmd.Context(), opts)
			if err != nil {
				return err
			}
			items := list.Items[:0]
			for _, in := range list.Items {
				if all || !in.Status.Phase.Terminal() {
					items = append(items, in)
				}
			}
			if quiet {
				output = "name"
			}
			return printInstances(g, output, items, true)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show finished instances too")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print names only")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "filter key=value: label=K=V, status=PHASE, node=NAME, name=NAME (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + strings.ToLower(s[1:])
}

func newGetCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME...",
		Short: "Show instances in full",
		Example: `  cube get web -o yaml
  cube get web -o jsonpath='{.status.ip}'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var items []*v1.Instance
			for _, name := range args {
				in, err := c.GetInstance(cmd.Context(), name)
				if err != nil {
					return err
				}
				items = append(items, in)
			}
			return printInstances(g, output, items, len(args) > 1)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func isTimeout(err error) bool { return errors.Is(err, errdefs.ErrTimeout) }

// waitFor waits for states, returning an error that names the current
// state when the instance ended elsewhere or time ran out.
func waitFor(ctx context.Context, c *client.Client, name string, states []string, timeout time.Duration) (*v1.Instance, error) {
	in, err := c.WaitInstance(ctx, name, states, timeout)
	if err != nil {
		return nil, err
	}
	if in == nil {
		return nil, nil
	}
	for _, st := range states {
		if matchState(in, st) {
			return in, nil
		}
	}
	msg := fmt.Sprintf("instance %q is %s", name, in.Status.Phase)
	if in.Status.Reason != "" || in.Status.Message != "" {
		msg += fmt.Sprintf(" (%s: %s)", in.Status.Reason, in.Status.Message)
	}
	return in, errors.New(msg + "; it will not become " + strings.Join(states, " or "))
}

func matchState(in *v1.Instance, st string) bool {
	if st == "exited" {
		return in.Status.Phase.Terminal()
	}
	return strings.EqualFold(st, string(in.Status.Phase))
}
