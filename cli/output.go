package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"
)

const outputHelp = "output format: table|wide|json|yaml|name|jsonpath=TEMPLATE (a list prints as one JSON array)"

func checkOutput(format string) error {
	switch {
	case format == "table", format == "wide", format == "json", format == "yaml", format == "name",
		strings.HasPrefix(format, "jsonpath="):
		return nil
	}
	return fmt.Errorf("unknown output format %q: use table, wide, json, yaml, name or jsonpath=TEMPLATE", format)
}

// printData prints v (an object or a slice) in a machine format; it
// returns false for table formats, which the caller prints itself.
func printData(w io.Writer, format string, v any, names []string) (bool, error) {
	switch {
	case format == "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintln(w, string(b))
		return true, err
	case format == "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = w.Write(b)
		return true, err
	case format == "name":
		for _, n := range names {
			fmt.Fprintln(w, n)
		}
		return true, nil
	case strings.HasPrefix(format, "jsonpath="):
		out, err := jsonPath(strings.TrimPrefix(format, "jsonpath="), v)
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintln(w, out)
		return true, err
	}
	return false, nil
}

var jpExpr = regexp.MustCompile(`\{([^}]*)\}`)

// jsonPath evaluates the simple JSONPath subset users reach for:
// "{.status.phase}", "{.items[0].metadata.name}", "{.spec.containers[*].image}".
func jsonPath(tmpl string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", err
	}
	var evalErr error
	out := jpExpr.ReplaceAllStringFunc(tmpl, func(m string) string {
		expr := strings.TrimSpace(m[1 : len(m)-1])
		vals, err := jpEval(expr, []any{doc})
		if err != nil {
			evalErr = err
			return ""
		}
		parts := make([]string, 0, len(vals))
		for _, x := range vals {
			switch t := x.(type) {
			case string:
				parts = append(parts, t)
			default:
				jb, _ := json.Marshal(t)
				parts = append(parts, string(jb))
			}
		}
		return strings.Join(parts, " ")
	})
	return out, evalErr
}

var jpSeg = regexp.MustCompile(`^([^.\[]*)((?:\[[^\]]*\])*)`)

func jpEval(expr string, cur []any) ([]any, error) {
	if !strings.HasPrefix(expr, ".") && expr != "" {
		return nil, fmt.Errorf("jsonpath %q: expressions start with '.'", expr)
	}
	for _, seg := range strings.Split(strings.TrimPrefix(expr, "."), ".") {
		if seg == "" {
			continue
		}
		m := jpSeg.FindStringSubmatch(seg)
		var next []any
		for _, c := range cur {
			if m[1] != "" {
				obj, ok := c.(map[string]any)
				if !ok {
					continue
				}
				c, ok = obj[m[1]]
				if !ok {
					continue
				}
			}
			next = append(next, c)
		}
		for _, idx := range regexp.MustCompile(`\[([^\]]*)\]`).FindAllStringSubmatch(m[2], -1) {
			var sel []any
			for _, c := range next {
				arr, ok := c.([]any)
				if !ok {
					continue
				}
				if idx[1] == "*" {
					sel = append(sel, arr...)
					continue
				}
				i, err := strconv.Atoi(idx[1])
				if err != nil {
					return nil, fmt.Errorf("jsonpath index %q is not a number or *", idx[1])
				}
				if i < 0 {
					i += len(arr)
				}
				if i >= 0 && i < len(arr) {
					sel = append(sel, arr[i])
				}
			}
			next = sel
		}
		cur = next
	}
	return cur, nil
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 3, ' ', 0) }

// age renders a duration the way docker ps does, compactly.
func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
