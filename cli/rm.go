package cli

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/spf13/cobra"
)

func newRmCmd(g *globals) *cobra.Command {
	var force, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rm [--force] NAME...",
		Short: "Remove instances",
		Long: `Remove instances and everything they left on their node (processes, mounts,
cgroups, network, logs). A live instance needs --force, which stops it first.
rm waits until the node has removed it, unless --wait=false.`,
		Example: `  cube rm job-1
  cube rm --force web`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var failed []string
			for _, name := range args {
				if err := c.DeleteInstance(cmd.Context(), name, force); err != nil {
					fmt.Fprintln(g.stderr, "cube: "+err.Error())
					failed = append(failed, name)
					continue
				}
				if wait {
					if _, err := c.WaitInstance(cmd.Context(), name, []string{"deleted"}, timeout); err != nil && !client.IsNotFound(err) {
						fmt.Fprintf(g.stderr, "cube: %s: %v\n", name, err)
						failed = append(failed, name)
						continue
					}
				}
				fmt.Fprintln(g.stdout, name)
			}
			if len(failed) > 0 {
				return fmt.Errorf("could not remove: %s", strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop a live instance and remove it")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the node has removed every trace")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the removal")
	return cmd
}

func newNodesCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "nodes",
		Short:   "List nodes with capacity, allocation and instances",
		Example: "  cube nodes\n  cube nodes -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.ListNodes(cmd.Context())
			if err != nil {
				return err
			}
			names := make([]string, len(list.Items))
			for i, n := range list.Items {
				names[i] = n.Metadata.Name
			}
			if done, err := printData(g.stdout, output, list.Items, names); done {
				return err
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "NAME\tSTATUS\tCPU(ALLOC/CAP)\tMEMORY(ALLOC/CAP)\tINSTANCES\tRUNTIMES\tACCEL\tTEMPLATES\tWARM\tAGE")
			now := time.Now()
			for _, n := range list.Items {
				status := "Ready"
				if !n.Status.Ready {
					status = "NotReady"
				}
				if n.Spec.Unschedulable {
					status += ",Unschedulable"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s/%s\t%d\t%s\t%s\t%s\t%s\t%s\n", n.Metadata.Name, status,
					n.Status.Allocated.CPU, n.Status.Capacity.CPU, n.Status.Allocated.Memory, n.Status.Capacity.Memory,
					n.Status.Instances, runtimesText(n.Status), orDash(n.Status.Accelerator), templatesText(n.Status.Templates),
					warmText(n.Status.Templates), age(n.Metadata.CreationTimestamp, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Import, pull and list images", Aliases: []string{"images"}}
	var insecure bool
	pull := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from an OCI registry",
		Example: `  cube image pull 127.0.0.1:5000/app:v1 --insecure
  cube image pull busybox`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "pulling %s...\n", args[0])
			start := time.Now()
			img, err := c.PullImage(cmd.Context(), args[0], insecure)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "pulled %s (%s) in %s\n", img.Metadata.Name, humanBytes(img.Size), time.Since(start).Round(time.Millisecond))
			fmt.Fprintln(g.stdout, img.Digest)
			return nil
		},
	}
	pull.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registry")
	imp := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Import an OCI image-layout tar or a `docker save` tar",
		Example: `  cube image import busybox.tar
  docker save app:v1 | cube image import -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var r io.Reader = g.stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			imgs, err := c.ImportImage(cmd.Context(), r)
			if err != nil {
				return err
			}
			for _, img := range imgs {
				fmt.Fprintf(g.stdout, "%s\t%s\n", img.Metadata.Name, img.Digest)
			}
			return nil
		},
	}
	var output string
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.ListImages(cmd.Context())
			if err != nil {
				return err
			}
			names := make([]string, len(list.Items))
			for i, im := range list.Items {
				names[i] = im.Metadata.Name
			}
			if done, err := printData(g.stdout, output, list.Items, names); done {
				return err
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tAGE")
			for _, im := range list.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.Metadata.Name, shortDigest(im.Digest), humanBytes(im.Size), age(im.Metadata.CreationTimestamp, time.Now()))
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	cmd.AddCommand(pull, imp, ls)
	return cmd
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// templatesText counts a node's ready VM templates per size:
// "1x324M:ready,1x128M:building" reads as "1/2 (1x324M)".
func templatesText(ts []v1.TemplateStatus) string {
	if len(ts) == 0 {
		return "-"
	}
	var ready []string
	for _, t := range ts {
		if t.State == "ready" {
			ready = append(ready, t.Size)
		}
	}
	out := fmt.Sprintf("%d/%d", len(ready), len(ts))
	if len(ready) > 0 {
		out += " (" + strings.Join(ready, ",") + ")"
	}
	return out
}

// warmText counts a node's warm VMs (clones restored and rehearsed
// ahead, which creates take over): "-" without templates.
func warmText(ts []v1.TemplateStatus) string {
	if len(ts) == 0 {
		return "-"
	}
	n := 0
	for _, t := range ts {
		n += t.Warm
	}
	return strconv.Itoa(n)
}

// runtimesText lists a node's runtimes, and the guest kernel's progress
// while microvm is not offered yet: "runc (microvm: kernel building 42%)".
func runtimesText(st v1.NodeStatus) string {
	out := orDash(strings.Join(st.Runtimes, ","))
	if k := st.GuestKernel; k != "" && k != "ready" && !slices.Contains(st.Runtimes, v1.RuntimeMicroVM) {
		out += " (microvm: kernel " + k + ")"
	}
	return out
}
