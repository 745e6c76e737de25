package network

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// removeOrphanMasq deletes the masquerade rules and chain that the bridge
// plugin made for instance id on network, for when the plugin's DEL cannot:
// it finds what to remove through the veth's addresses inside the
// namespace, so with the namespace gone (its pin unmounted behind our back)
// it skips them. Left alone, they make every later DEL of the id fail
// ("CHAIN_DEL failed (Device or resource busy)"), because the next ADD
// reuses the chain and its DEL deletes only its own jump to it.
//
// The chain name and comment follow the plugins' utils.FormatChainName and
// utils.FormatComment, stable since CNI plugins v0.7.
func removeOrphanMasq(ctx context.Context, network, id string) error {
	sum := sha512.Sum512([]byte(network + id))
	chain := "CNI-" + hex.EncodeToString(sum[:])[:24]
	comment := fmt.Sprintf("name: %q id: %q", network, id)

	out, err := iptables(ctx, "-t", "nat", "-S")
	if err != nil {
		return err
	}
	source := regexp.MustCompile(`^-A POSTROUTING -s (\S+) .*-j ` + regexp.QuoteMeta(chain) + `$`)
	hasChain := false
	for _, line := range strings.Split(out, "\n") {
		if line == "-N "+chain {
			hasChain = true
		}
		if m := source.FindStringSubmatch(line); m != nil {
			if _, err := iptables(ctx, "-t", "nat", "-D", "POSTROUTING", "-s", m[1],
				"-m", "comment", "--comment", comment, "-j", chain); err != nil {
				return err
			}
		}
	}
	if !hasChain {
		return nil
	}
	if _, err := iptables(ctx, "-t", "nat", "-F", chain); err != nil {
		return err
	}
	_, err = iptables(ctx, "-t", "nat", "-X", chain)
	return err
}

func iptables(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"-w"}, args...)
	out, err := exec.CommandContext(ctx, "iptables", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
