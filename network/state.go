package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// instanceState is what survives a restart of the node agent: enough to
// answer Pin and Attach again and to run CNI DEL with the same arguments as
// ADD.
// It is written before the namespace is pinned (so its ports reserve the
// host ports until Teardown) and removed last by Teardown, so a state file
// exists whenever anything of the instance may be left on the host.
type instanceState struct {
	ID    string        `json:"id"`
	NetNS string        `json:"netns"`
	Ports []PortMapping `json:"ports,omitempty"`
	// Tenant owns the instance: only instances of one tenant exchange
	// packets. Empty in state files older than the field (such an
	// instance is isolated from all others, see tenantGroup).
	Tenant string `json:"tenant,omitempty"`
	// IP is set, and Ready true, once CNI ADD has succeeded. A state that
	// is not Ready is pinned and not attached yet, or was left by a Pin or
	// Attach that failed or crashed midway.
	IP    string `json:"ip,omitempty"`
	Ready bool   `json:"ready"`
	// Chain is the plugin chain ADD runs and DEL must run again:
	// chainBridge or chainBridgePortMap, or chainLegacy ("") in state
	// files older than the field.
	Chain string `json:"chain,omitempty"`
	// Masq tells that an earlier version made masquerade rules for this
	// instance alone, which DEL must remove (see removeMasq). Attachments
	// made now have none: the network's rules cover them. In chainLegacy
	// the bridge plugin made them, if the network masqueraded.
	Masq bool `json:"masq,omitempty"`
	// HostVeth and MAC are set, from the CNI result, with Ready and until
	// DEL: the filter has the instance's elements whenever HostVeth is
	// set, so a sync of the filter from the state files makes the right
	// ones.
	HostVeth string `json:"hostVeth,omitempty"`
	MAC      string `json:"mac,omitempty"`
	// PrefixLen, Gateway, Routes and DNS are the rest of the CNI result
	// (unset in state files older than them; see cniManager.attachmentOf).
	PrefixLen int     `json:"prefixLen,omitempty"`
	Gateway   string  `json:"gateway,omitempty"`
	Routes    []Route `json:"routes,omitempty"`
	DNS       DNS     `json:"dns,omitzero"`
}

// port is what the filter needs of s; only meaningful with HostVeth set.
func (s instanceState) port() port {
	return port{ID: s.ID, Veth: s.HostVeth, MAC: s.MAC, IP: s.IP, Group: tenantGroup(s.Tenant, s.ID)}
}

func (s instanceState) attachment() Attachment {
	return Attachment{NetNS: s.NetNS, IP: s.IP, Interface: ifName, MAC: s.MAC,
		PrefixLen: s.PrefixLen, Gateway: s.Gateway, Routes: s.Routes, DNS: s.DNS}
}

// stateStore keeps one JSON file per instance in dir.
type stateStore struct {
	dir string
}

const stateExt = ".json"

func (s stateStore) path(id string) string {
	return filepath.Join(s.dir, id+stateExt)
}

// get returns the state of id; ok is false if there is none.
func (s stateStore) get(id string) (st instanceState, ok bool, err error) {
	b, err := os.ReadFile(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return instanceState{}, false, nil
	}
	if err != nil {
		return instanceState{}, false, fmt.Errorf("read network state of %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return instanceState{}, false, fmt.Errorf("network state file %s is corrupt (remove it after cleaning up by hand): %w", s.path(id), err)
	}
	return st, true, nil
}

// put replaces the state of st.ID atomically (write, fsync, rename), so a
// crash leaves either the old or the new file.
func (s stateStore) put(st instanceState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode network state of %s: %w", st.ID, err)
	}
	f, err := os.CreateTemp(s.dir, "."+st.ID+".tmp*")
	if err != nil {
		return fmt.Errorf("write network state of %s: %w", st.ID, err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(st.ID))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write network state of %s: %w", st.ID, err)
	}
	return nil
}

// remove deletes the state of id; a missing file is not an error.
func (s stateStore) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove network state of %s: %w", id, err)
	}
	return nil
}

// ids lists the instances with a state file, sorted.
func (s stateStore) ids() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list network state in %s: %w", s.dir, err)
	}
	var ids []string
	for _, e := range entries {
		name := e.Name()
		if e.Type().IsRegular() && strings.HasSuffix(name, stateExt) && !strings.HasPrefix(name, ".") {
			ids = append(ids, strings.TrimSuffix(name, stateExt))
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// all reads every state file. Files that vanish meanwhile (a concurrent
// Teardown) are skipped.
func (s stateStore) all() ([]instanceState, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	states := make([]instanceState, 0, len(ids))
	for _, id := range ids {
		st, ok, err := s.get(id)
		if err != nil {
			return nil, err
		}
		if ok {
			states = append(states, st)
		}
	}
	return states, nil
}
