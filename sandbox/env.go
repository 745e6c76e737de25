package sandbox

import "strings"

// MergeEnv returns base with every KEY=VALUE of over applied (later
// wins), as a container's environment is built from its image's and an
// exec's from its container's, in every backend.
func MergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	index := make(map[string]int, len(out))
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		index[k] = i
	}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	return out
}
