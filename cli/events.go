package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
)

func newEventsCmd(g *globals) *cobra.Command {
	var (
		output string
		opts   client.EventOptions
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "events [NAME]",
		Short: "Show what happened to instances: created, scheduled, started, exited, restarted, failed...",
		Long: `Show the lifecycle events of your instances, oldest first. Container events
carry the exit code, the signal, whether the container ran out of memory, and
its restart count. Events are kept for an hour.

With --watch, print the recorded events and then each new one as it happens,
until interrupted. With -o json, --watch prints one JSON object per line.`,
		Example: `  cube events
  cube events web
  cube events --for web --types Warning
  cube events --watch -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if len(args) == 1 {
				if opts.For != "" && opts.For != args[0] {
					return fmt.Errorf("both NAME %q and --for %q given: use one", args[0], opts.For)
				}
				opts.For = args[0]
			}
			for _, t := range opts.Types {
				if !strings.EqualFold(t, v1.EventNormal) && !strings.EqualFold(t, v1.EventWarning) {
					return fmt.Errorf("--types %q: want Normal or Warning", t)
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if !follow {
				list, err := c.ListEvents(cmd.Context(), opts)
				if err != nil {
					return err
				}
				names := make([]string, len(list.Items))
				for i, e := range list.Items {
					names[i] = e.Metadata.Name
				}
				if done, err := printData(g.stdout, output, list.Items, names); done {
					return err
				}
				tw := newTable(g.stdout)
				eventHeader(tw)
				for _, e := range list.Items {
					eventRow(tw, e)
				}
				return tw.Flush()
			}
			events, err := c.WatchEvents(cmd.Context(), opts, "")
			if err != nil {
				return err
			}
			tw := newTable(g.stdout)
			if output == "table" || output == "wide" {
				eventHeader(tw)
			}
			for ev := range events {
				e := ev.Object
				switch {
				case output == "json":
					b, err := json.Marshal(e)
					if err != nil {
						return err
					}
					fmt.Fprintln(g.stdout, string(b))
					continue
				case output == "table" || output == "wide":
					eventRow(tw, e)
					if err := tw.Flush(); err != nil {
						return err
					}
					continue
				}
				if output == "yaml" {
					fmt.Fprintln(g.stdout, "---")
				}
				if _, err := printData(g.stdout, output, e, []string{e.Metadata.Name}); err != nil {
					return err
				}
			}
			return fmt.Errorf("the server ended the event stream; run the command again")
		},
	}
	cmd.Flags().StringVar(&opts.For, "for", "", "only the events of this instance")
	cmd.Flags().StringSliceVar(&opts.Types, "types", nil, "only events of these types: Normal, Warning (repeatable or comma-separated)")
	cmd.Flags().BoolVarP(&follow, "watch", "w", false, "keep printing new events as they happen")
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func eventHeader(tw *tabwriter.Writer) {
	fmt.Fprintln(tw, "TIME\tTYPE\tINSTANCE\tREASON\tMESSAGE")
}

func eventRow(tw *tabwriter.Writer, e *v1.Event) {
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format("2006-01-02T15:04:05Z"), e.Type, e.Instance, e.Reason, e.Message)
}
