package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/cube-platform/cube/client"
	"github.com/spf13/cobra"
)

// configFile is the client config path: --config, else $CUBE_CONFIG, else
// ~/.config/cube/config.yaml.
func (g *globals) configFile() string {
	if g.configPath != "" {
		return g.configPath
	}
	return client.DefaultConfigPath()
}

// contextView is a context as `cube config get-contexts` prints it: never
// with its token.
type contextView struct {
	Name    string `json:"name"`
	Server  string `json:"server"`
	Current bool   `json:"current"`
}

func contextNames(cfg *client.Config) string {
	if len(cfg.Contexts) == 0 {
		return "it has none (`cube up` writes one)"
	}
	names := make([]string, len(cfg.Contexts))
	for i, c := range cfg.Contexts {
		names[i] = c.Name
	}
	return "the contexts are: " + strings.Join(names, ", ")
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and switch the client config's contexts",
		Long: `The client config ($CUBE_CONFIG, default ~/.config/cube/config.yaml, mode
0600) holds named contexts, each a server and a token, like a kubeconfig.
One is current; --context picks another for one command, and CUBE_SERVER
and CUBE_TOKEN override whichever is used. Tokens are never printed.`,
		Example: `  cube config get-contexts
  cube config use-context staging
  cube --context prod ps`,
	}
	cmd.AddCommand(newGetContextsCmd(g), newCurrentContextCmd(g), newUseContextCmd(g))
	return cmd
}

func newGetContextsCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get-contexts [NAME]",
		Short: "List the contexts (the current one is marked *)",
		Long: `List the contexts of the client config: CURRENT (*), NAME and SERVER, or
with -o json|yaml one array of {name, server, current}. Tokens are never
printed.`,
		Example: `  cube config get-contexts
  cube config get-contexts -o name
  cube config get-contexts local -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			path := g.configFile()
			cfg, err := client.LoadConfig(path)
			if err != nil {
				return err
			}
			views := []contextView{}
			for _, c := range cfg.Contexts {
				if len(args) == 1 && c.Name != args[0] {
					continue
				}
				views = append(views, contextView{Name: c.Name, Server: c.Server, Current: c.Name == cfg.CurrentContext})
			}
			if len(args) == 1 && len(views) == 0 {
				return fmt.Errorf("context %q not found in %s; %s", args[0], path, contextNames(cfg))
			}
			for _, env := range []string{"CUBE_SERVER", "CUBE_TOKEN"} {
				if os.Getenv(env) != "" {
					fmt.Fprintf(g.stderr, "note: %s is set and overrides the context in use\n", env)
				}
			}
			names := make([]string, len(views))
			for i, v := range views {
				names[i] = v.Name
			}
			if done, err := printData(g.stdout, output, views, names); done {
				return err
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "CURRENT\tNAME\tSERVER")
			for _, v := range views {
				cur := ""
				if v.Current {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", cur, v.Name, v.Server)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func newCurrentContextCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "current-context",
		Short:   "Print the name of the current context",
		Example: `  cube config current-context`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := g.configFile()
			cfg, err := client.LoadConfig(path)
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return fmt.Errorf("no current context in %s: pick one with `cube config use-context NAME`; %s", path, contextNames(cfg))
			}
			fmt.Fprintln(g.stdout, cfg.CurrentContext)
			return nil
		},
	}
}

func newUseContextCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "use-context NAME",
		Short:   "Make NAME the current context",
		Example: `  cube config use-context staging`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := g.configFile()
			cfg, err := client.LoadConfig(path)
			if err != nil {
				return err
			}
			name := args[0]
			found := false
			for _, c := range cfg.Contexts {
				found = found || c.Name == name
			}
			if !found {
				return fmt.Errorf("context %q not found in %s; %s", name, path, contextNames(cfg))
			}
			cfg.CurrentContext = name
			if err := cfg.Save(path); err != nil {
				return fmt.Errorf("save %s: %w", path, err)
			}
			fmt.Fprintf(g.stdout, "switched to context %q\n", name)
			return nil
		},
	}
}
