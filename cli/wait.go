package cli

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newWaitCmd(g *globals) *cobra.Command {
	var forState string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until an instance reaches a state",
		Long: `Wait until the instance is running, suspended, has exited, or is deleted. On timeout
(or if it ends in another state) cube exits 1 and prints the current state
and its reason.`,
		Example: `  cube wait web --for running --timeout 60s
  cube wait job --for exited
  cube wait web --for deleted`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st := strings.ToLower(forState)
			if st == "condition=ready" {
				st = "running"
			}
			switch st {
			case "running", "suspended", "exited", "deleted", "pending", "scheduled", "creating", "succeeded", "failed":
			default:
				return fmt.Errorf("--for %q: want running, suspended, exited, deleted or condition=Ready", forState)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			in, err := waitFor(cmd.Context(), c, args[0], []string{st}, timeout)
			if err != nil {
				if st == "deleted" && client.IsNotFound(err) {
					return nil
				}
				fmt.Fprintln(g.stderr, "cube: "+err.Error())
				return &ExitError{Code: 1}
			}
			if in != nil {
				fmt.Fprintf(g.stdout, "%s %s\n", in.Metadata.Name, in.Status.Phase)
			} else {
				fmt.Fprintf(g.stdout, "%s deleted\n", args[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&forState, "for", "running", "state to wait for: running|suspended|exited|deleted|condition=Ready")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait (e.g. 30s, 5m)")
	return cmd
}

func newLogsCmd(g *globals) *cobra.Command {
	var o client.LogOptions
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print an instance's logs",
		Long: `Print the whole log history of a container (the first one unless
--container says), and with -f keep following it.
--since and --until take RFC 3339, Unix seconds, or a duration back from now (42m).`,
		Example: `  cube logs web
  cube logs web -f --tail 10
  cube logs web --container sidecar --since 5m -t`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.Logs(cmd.Context(), args[0], o, g.stdout)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.Container, "container", "c", "", "container to read (default: the first)")
	fl.BoolVarP(&o.Follow, "follow", "f", false, "keep printing new lines")
	fl.IntVarP(&o.Tail, "tail", "n", -1, "print only the last N lines")
	fl.StringVar(&o.Since, "since", "", "only lines at or after this time")
	fl.StringVar(&o.Until, "until", "", "only lines before this time")
	fl.BoolVarP(&o.Timestamps, "timestamps", "t", false, "prefix each line with its RFC 3339 timestamp")
	return cmd
}

func newExecCmd(g *globals) *cobra.Command {
	var req v1.ExecRequest
	var interactive bool
	var env []string
	cmd := &cobra.Command{
		Use:   "exec [flags] NAME -- COMMAND [ARG...]",
		Short: "Run a command in a running instance",
		Long:  "Run a command in a container of a running instance; cube exits with the command's exit code.",
		Example: `  cube exec web -- sh -c 'echo $GREETING'
  cube exec -it web -- sh`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, command := args[0], args[1:]
			if len(command) > 0 && command[0] == "--" {
				command = command[1:]
			}
			if len(command) == 0 {
				return fmt.Errorf("exec needs a command after the instance name")
			}
			req.Command, req.Env = command, env
			c, err := g.client()
			if err != nil {
				return err
			}
			var stdin = g.stdin
			if !interactive {
				stdin = nil
			}
			var resize chan client.WindowSize
			if req.TTY {
				fd := int(os.Stdin.Fd())
				if !term.IsTerminal(fd) {
					return fmt.Errorf("-t needs a terminal on stdin; drop -t to pipe input")
				}
				old, err := term.MakeRaw(fd)
				if err != nil {
					return err
				}
				defer term.Restore(fd, old)
				resize = make(chan client.WindowSize, 4)
				sig := make(chan os.Signal, 1)
				signal.Notify(sig, syscall.SIGWINCH)
				defer signal.Stop(sig)
				send := func() {
					if w, h, err := term.GetSize(fd); err == nil {
						select {
						case resize <- client.WindowSize{Rows: uint16(h), Cols: uint16(w)}:
						default:
						}
					}
				}
				send()
				go func() {
					for range sig {
						send()
					}
				}()
			}
			code, err := c.Exec(cmd.Context(), name, req, stdin, g.stdout, g.stderr, resize)
			if err != nil {
				// Docker's codes for a command that could not run.
				switch msg := err.Error(); {
				case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
					fmt.Fprintln(g.stderr, "cube: "+msg)
					return &ExitError{Code: ExitNotFound}
				case strings.Contains(msg, "permission denied"):
					fmt.Fprintln(g.stderr, "cube: "+msg)
					return &ExitError{Code: ExitCannotInvoke}
				}
				return err
			}
			if code != 0 {
				return &ExitError{Code: code}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false)
	fl.BoolVarP(&interactive, "interactive", "i", false, "pass stdin to the command")
	fl.BoolVarP(&req.TTY, "tty", "t", false, "allocate a terminal")
	fl.StringVarP(&req.Container, "container", "c", "", "container to run in (default: the first)")
	fl.StringArrayVarP(&env, "env", "e", nil, "set an environment variable KEY=VALUE (repeatable)")
	return cmd
}
