package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

func newApplyCmd(g *globals) *cobra.Command {
	var files []string
	var dryRun string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create instances from YAML or JSON files",
		Long: `Create every instance described in the files (multi-document YAML or JSON,
"---" between documents). apply is idempotent: an instance that exists with
the same spec is left unchanged. Instances are immutable: to change one,
rm it and apply again.`,
		Example: `  cube apply -f instance.yaml
  cube apply -f deploy/ --dry-run=client
  cat instance.yaml | cube apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return errors.New("apply needs -f FILE, -f DIR or -f -")
			}
			if dryRun != "" && dryRun != "none" && dryRun != "client" && dryRun != "server" {
				return fmt.Errorf("--dry-run %q: want client or server", dryRun)
			}
			objs, err := loadManifests(g, files)
			if err != nil {
				return err
			}
			if dryRun == "client" {
				for _, in := range objs {
					fmt.Fprintf(g.stdout, "instance/%s valid (dry run)\n", in.Metadata.Name)
				}
				return nil
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			for _, in := range objs {
				if dryRun == "server" {
					if err := c.DryRunInstance(cmd.Context(), in); err != nil {
						return fmt.Errorf("instance/%s: %w", in.Metadata.Name, err)
					}
					fmt.Fprintf(g.stdout, "instance/%s valid (server dry run)\n", in.Metadata.Name)
					continue
				}
				_, err := c.CreateInstance(cmd.Context(), in)
				if errors.Is(err, errdefs.ErrAlreadyExists) {
					cur, gerr := c.GetInstance(cmd.Context(), in.Metadata.Name)
					if gerr != nil {
						return gerr
					}
					if sameSpec(cur, in) {
						fmt.Fprintf(g.stdout, "instance/%s unchanged\n", in.Metadata.Name)
						continue
					}
					return fmt.Errorf("instance/%s exists with a different spec; instances are immutable: `cube rm --force %s` and apply again", in.Metadata.Name, in.Metadata.Name)
				}
				if err != nil {
					return fmt.Errorf("instance/%s: %w", in.Metadata.Name, err)
				}
				fmt.Fprintf(g.stdout, "instance/%s created\n", in.Metadata.Name)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory (*.yaml, *.yml, *.json) or - for stdin (repeatable)")
	cmd.Flags().StringVar(&dryRun, "dry-run", "", "client: validate locally; server: validate and admit on the server without creating")
	cmd.Flags().Lookup("dry-run").NoOptDefVal = "client"
	return cmd
}

// applyView is what apply compares and diff prints: what the user writes
// (name, labels, spec), without what the server adds (image digests).
type applyView struct {
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
	Spec v1.InstanceSpec `json:"spec"`
}

func applyViewOf(in *v1.Instance) applyView {
	var v applyView
	v.Metadata.Name, v.Metadata.Labels = in.Metadata.Name, in.Metadata.Labels
	v.Spec = in.Spec
	v.Spec.Suspend = false // the desired state cube suspend sets, not what a manifest says
	v.Spec.Containers = append([]v1.Container{}, in.Spec.Containers...)
	for i := range v.Spec.Containers {
		v.Spec.Containers[i].ImageDigest = ""
	}
	return v
}

// withServerDefaults returns want with what the server chose for cur
// where want leaves it to the server: the runtime, which depends on the
// tenant's grants.
func withServerDefaults(want, cur *v1.Instance) *v1.Instance {
	if want.Spec.Runtime != "" {
		return want
	}
	w := *want
	w.Spec.Runtime = cur.Spec.Runtime
	return &w
}

// sameSpec compares what the user wrote, ignoring what the server adds.
// It compares the encoded forms, as the server stores them, so that an
// empty list in a manifest equals the absent one the server gives back.
func sameSpec(cur, want *v1.Instance) bool {
	a, errA := json.Marshal(applyViewOf(cur))
	b, errB := json.Marshal(applyViewOf(withServerDefaults(want, cur)))
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// loadManifests reads the instances of every -f path, with defaults set,
// and refuses an invalid one, naming it.
func loadManifests(g *globals, paths []string) ([]*v1.Instance, error) {
	var objs []*v1.Instance
	for _, f := range paths {
		got, err := readManifests(g, f)
		if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	for _, in := range objs {
		in.SetDefaults()
		if err := in.Validate(); err != nil {
			return nil, fmt.Errorf("instance/%s: %w", in.Metadata.Name, err)
		}
	}
	return objs, nil
}

func readManifests(g *globals, path string) ([]*v1.Instance, error) {
	if path == "-" {
		b, err := io.ReadAll(g.stdin)
		if err != nil {
			return nil, err
		}
		return parseManifests("stdin", b)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return parseManifests(path, b)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var out []*v1.Instance
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		got, err := readManifests(g, filepath.Join(path, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// parseManifests splits multi-document YAML (JSON is YAML) and decodes each
// document strictly, so a misspelt field is an error, not a silent default.
func parseManifests(src string, b []byte) ([]*v1.Instance, error) {
	var out []*v1.Instance
	var doc bytes.Buffer
	flush := func(n int) error {
		if strings.TrimSpace(doc.String()) == "" {
			doc.Reset()
			return nil
		}
		var in v1.Instance
		if err := yaml.UnmarshalStrict(doc.Bytes(), &in); err != nil {
			return fmt.Errorf("%s: document %d: %w", src, n, err)
		}
		doc.Reset()
		if in.Kind != "" && in.Kind != "Instance" {
			return fmt.Errorf("%s: document %d: kind %q is not supported (only Instance)", src, n, in.Kind)
		}
		out = append(out, &in)
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n := 1
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" {
			if err := flush(n); err != nil {
				return nil, err
			}
			n++
			continue
		}
		doc.WriteString(line + "\n")
	}
	if err := flush(n); err != nil {
		return nil, err
	}
	return out, sc.Err()
}
