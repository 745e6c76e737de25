package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

func newBenchSchedulerCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "scheduler",
		Short: "Benchmark the pure scheduler on a synthetic fleet",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("not wired yet")
		},
	}
}
