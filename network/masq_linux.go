package network

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Outbound traffic of an instance is masqueraded by the rules the bridge
// plugin's ipMasq would make: a chain per instance that accepts traffic to
// the subnet and masquerades the rest (but multicast), and a jump to it from
// nat POSTROUTING for the instance's address. The manager installs them in
// one iptables-restore transaction instead of the plugin's seven iptables
// runs (each a few ms, and serialized on the xtables lock), and removes
// them in two runs instead of the plugin's six.
//
// The chain name and comment follow the plugins' utils.FormatChainName and
// utils.FormatComment, stable since CNI plugins v0.7, so removeMasq also
// finds the rules the plugin made for attachments older than this scheme.

// masqNames returns the chain and the comment of id's masquerade rules.
func masqNames(network, id string) (chain, comment string) {
	sum := sha512.Sum512([]byte(network + id))
	return "CNI-" + hex.EncodeToString(sum[:])[:24], fmt.Sprintf("name: %q id: %q", network, id)
}

// multicastNet is not masqueraded: instances may talk multicast on the
// bridge (the plugin's rule).
const multicastNet = "224.0.0.0/4"

// addMasq masquerades traffic from ip to addresses outside subnet.
func addMasq(ctx context.Context, network, id string, ip netip.Addr, subnet netip.Prefix) error {
	chain, comment := masqNames(network, id)
	c := strconv.Quote(comment)
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", chain)
	fmt.Fprintf(&b, "-A %s -d %s -m comment --comment %s -j ACCEPT\n", chain, subnet, c)
	fmt.Fprintf(&b, "-A %s ! -d %s -m comment --comment %s -j MASQUERADE\n", chain, multicastNet, c)
	fmt.Fprintf(&b, "-A POSTROUTING -s %s/32 -m comment --comment %s -j %s\n", ip, c, chain)
	b.WriteString("COMMIT\n")
	if err := iptablesRestore(ctx, b.String()); err != nil {
		return fmt.Errorf("add masquerade rules: %w", err)
	}
	return nil
}

// removeMasq deletes id's masquerade rules and chain, whoever made them,
// and whatever part of them exists. It needs no namespace: the plugin's DEL
// finds the rules through the veth's addresses inside the namespace, so
// with the namespace gone (its pin unmounted behind our back) it skips
// them. Left alone, they make every later DEL of the id fail ("CHAIN_DEL
// failed (Device or resource busy)"), because the next ADD reuses the chain
// and its DEL deletes only its own jump to it.
func removeMasq(ctx context.Context, network, id string) error {
	chain, _ := masqNames(network, id)
	out, err := iptables(ctx, "-t", "nat", "-S")
	if err != nil {
		return err
	}
	jump := regexp.MustCompile(`^-A POSTROUTING -s \S+ .*-j ` + regexp.QuoteMeta(chain) + `$`)
	var b strings.Builder
	hasChain := false
	for _, line := range strings.Split(out, "\n") {
		if line == "-N "+chain {
			hasChain = true
		}
		if jump.MatchString(line) {
			// -S prints rules in the syntax iptables-restore reads.
			b.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
		}
	}
	if b.Len() == 0 && !hasChain {
		return nil
	}
	tx := "*nat\n"
	if hasChain {
		tx += ":" + chain + " - [0:0]\n" // flushes it
	}
	tx += b.String()
	if hasChain {
		tx += "-X " + chain + "\n"
	}
	if err := iptablesRestore(ctx, tx+"COMMIT\n"); err != nil {
		return fmt.Errorf("remove masquerade rules: %w", err)
	}
	return nil
}

func iptables(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"-w"}, args...)
	out, err := exec.CommandContext(ctx, "iptables", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// iptablesRestore applies tx, all or nothing, leaving other rules alone.
func iptablesRestore(ctx context.Context, tx string) error {
	cmd := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(tx)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s (input:\n%s)", err, strings.TrimSpace(out.String()), tx)
	}
	return nil
}
