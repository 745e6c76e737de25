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

// Outbound traffic of the instances is masqueraded by one set of rules for
// the whole network, made once when the manager starts, as Docker does for
// a bridge network: nat POSTROUTING sends traffic from the subnet to a
// chain of the network's own, which leaves traffic to the subnet and
// multicast alone and masquerades the rest. An instance start or stop then
// runs no iptables at all, and the cost does not grow with the instances
// (iptables-restore and iptables -S read the whole table).
//
// Attachments made by earlier versions have rules of their own, a chain
// per instance, made by the manager (state Masq) or by the bridge plugin's
// ipMasq (chainLegacy); removeMasq still removes them. Their chain name and
// comment follow the plugins' utils.FormatChainName and utils.FormatComment.

// masqNames returns the chain and the comment of id's masquerade rules, as
// attachments of earlier versions have them.
func masqNames(network, id string) (chain, comment string) {
	sum := sha512.Sum512([]byte(network + id))
	return "CNI-" + hex.EncodeToString(sum[:])[:24], fmt.Sprintf("name: %q id: %q", network, id)
}

// networkMasqNames returns the chain and the comment of the network's
// masquerade rules.
func networkMasqNames(network string) (chain, comment string) {
	sum := sha512.Sum512([]byte("cube-masq:" + network))
	return "CUBE-MASQ-" + strings.ToUpper(hex.EncodeToString(sum[:])[:16]), "cube network " + network + ": masquerade"
}

// multicastNet is not masqueraded: instances may talk multicast on the
// bridge.
const multicastNet = "224.0.0.0/4"

// ensureNetworkMasq makes the network's masquerade rules for subnet, in
// one iptables-restore transaction: the chain is rewritten, and the jumps
// to it are replaced by one for subnet, so a restart, or a changed subnet,
// leaves exactly one set.
func ensureNetworkMasq(ctx context.Context, network string, subnet netip.Prefix) error {
	chain, comment := networkMasqNames(network)
	out, err := iptables(ctx, "-t", "nat", "-S", "POSTROUTING")
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", chain) // creates or flushes it
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "-A POSTROUTING ") && strings.HasSuffix(line, " -j "+chain) {
			b.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
		}
	}
	fmt.Fprintf(&b, "-A %s -d %s -j RETURN\n", chain, subnet)
	fmt.Fprintf(&b, "-A %s -d %s -j RETURN\n", chain, multicastNet)
	fmt.Fprintf(&b, "-A %s -j MASQUERADE\n", chain)
	fmt.Fprintf(&b, "-A POSTROUTING -s %s -m comment --comment %s -j %s\n", subnet, strconv.Quote(comment), chain)
	b.WriteString("COMMIT\n")
	if err := iptablesRestore(ctx, b.String()); err != nil {
		return fmt.Errorf("masquerade the instance network: %w", err)
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
