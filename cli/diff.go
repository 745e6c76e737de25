package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// ExitDiffers is `cube diff`'s exit code when something would change
// (diff(1) and `kubectl diff` use 1 too); errors are ExitCubeError.
const ExitDiffers = 1

func newDiffCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR|-",
		Short: "Show what apply would change",
		Long: `Compare each instance in the files (as apply reads them) with the server's
and print a unified diff of its labels and spec, live (---) against desired
(+++). An instance that does not exist yet shows as all added; the server
checks it as ` + "`apply --dry-run=server`" + ` would. Fields the server fills in
(imageDigest) are left out.

Instances are immutable: when one exists with a different spec, apply
refuses to change it, and diff says so on stderr.

Exit status: 0 when nothing differs, 1 when something differs, 125 when
diff itself failed (unreadable file, invalid spec, unreachable server).`,
		Example: `  cube diff -f instance.yaml
  cube diff -f deploy/ && echo "apply would change nothing"
  cat instance.yaml | cube diff -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return errors.New("diff needs -f FILE, -f DIR or -f -")
			}
			objs, err := loadManifests(g, files)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			differs := false
			for _, in := range objs {
				d, err := diffInstance(cmd.Context(), g, c, in)
				if err != nil {
					return err
				}
				if d == "" {
					continue
				}
				differs = true
				if _, err := io.WriteString(g.stdout, d); err != nil {
					return err
				}
			}
			if differs {
				return &ExitError{Code: ExitDiffers}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory (*.yaml, *.yml, *.json) or - for stdin (repeatable)")
	return cmd
}

// diffInstance returns the diff of what apply would do to want ("" when
// nothing), and warns on stderr when apply would refuse it.
func diffInstance(ctx context.Context, g *globals, c *client.Client, want *v1.Instance) (string, error) {
	name := "instance/" + want.Metadata.Name
	desired, err := applyViewYAML(want)
	if err != nil {
		return "", err
	}
	cur, err := c.GetInstance(ctx, want.Metadata.Name)
	if client.IsNotFound(err) {
		// apply would create it, unless the server refuses it.
		if err := c.DryRunInstance(ctx, want); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return unifiedDiff(name+" (live)", name+" (desired)", "", desired), nil
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if sameSpec(cur, want) {
		return "", nil
	}
	if desired, err = applyViewYAML(withServerDefaults(want, cur)); err != nil {
		return "", err
	}
	live, err := applyViewYAML(cur)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(g.stderr, "%s: instances are immutable, so apply would refuse this change: `cube rm --force %s` and apply again\n", name, want.Metadata.Name)
	return unifiedDiff(name+" (live)", name+" (desired)", live, desired), nil
}

func applyViewYAML(in *v1.Instance) (string, error) {
	b, err := yaml.Marshal(applyViewOf(in))
	return string(b), err
}

// unifiedDiff is a diff -u of two texts with 3 lines of context; "" when
// they are equal.
func unifiedDiff(nameA, nameB, a, b string) string {
	if a == b {
		return ""
	}
	x, y := splitLines(a), splitLines(b)
	ops := diffLines(x, y)
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	const context = 3
	for i := 0; i < len(ops); {
		if ops[i].kind == ' ' {
			i++
			continue
		}
		// A hunk: from context lines before this change to context lines
		// after the last change that is at most 2×context lines away.
		start := max(i-context, 0)
		end := i
		for j := i; j < len(ops); j++ {
			if ops[j].kind != ' ' {
				end = j
			} else if j-end > 2*context {
				break
			}
		}
		stop := min(end+context+1, len(ops))
		aStart, bStart := ops[start].a, ops[start].b
		var aLen, bLen int
		for _, o := range ops[start:stop] {
			if o.kind != '+' {
				aLen++
			}
			if o.kind != '-' {
				bLen++
			}
		}
		fmt.Fprintf(&sb, "@@ -%s +%s @@\n", hunkRange(aStart, aLen), hunkRange(bStart, bLen))
		for _, o := range ops[start:stop] {
			sb.WriteByte(o.kind)
			sb.WriteString(o.line)
			sb.WriteByte('\n')
		}
		i = stop
	}
	return sb.String()
}

// hunkRange is "start,len" with 1-based start, as diff -u writes it (an
// empty range names the line before it).
func hunkRange(start, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", start)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// diffOp is one line of an edit script: kind ' ', '-' or '+', and the
// 0-based line numbers in a and b where it sits.
type diffOp struct {
	kind byte
	line string
	a, b int
}

// diffLines is a shortest edit script by longest common subsequence;
// manifests are small, so the quadratic table is fine.
func diffLines(x, y []string) []diffOp {
	n, m := len(x), len(y)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []diffOp
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			ops = append(ops, diffOp{' ', x[i], i, j})
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] > lcs[i+1][j]):
			ops = append(ops, diffOp{'+', y[j], i, j})
			j++
		default:
			ops = append(ops, diffOp{'-', x[i], i, j})
			i++
		}
	}
	return ops
}
