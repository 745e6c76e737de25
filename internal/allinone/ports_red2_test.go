package allinone

import (
	"slices"
	"testing"

	"github.com/cube-platform/cube/store"
)

// TestReservedPortsCoverWhatThePlatformDials: a tenant may not publish
// the port of an allowed registry or an external etcd member on this
// host. The network layer refuses only ports bound at the time, so while
// the registry or member was down a tenant could take its port, and its
// DNAT rule would then receive this host's pulls (images for every
// tenant) or the API server's etcd traffic.
func TestReservedPortsCoverWhatThePlatformDials(t *testing.T) {
	got := reservedPorts(Config{Listen: "127.0.0.1:7443", NodeListen: "10.0.0.1:7444",
		RegistryAllow: []string{"127.0.0.1:5000", "registry.local:5443"},
		Etcd:          store.External{Endpoints: []string{"https://127.0.0.1:2379", "http://10.0.0.2:12379"}}})
	for _, want := range []int{7443, 7444, 5000, 5443, 2379, 12379} {
		if !slices.Contains(got, want) {
			t.Errorf("reservedPorts = %v; want it to hold %d", got, want)
		}
	}
	if got := reservedPorts(Config{Listen: "127.0.0.1:0"}); len(got) != 0 {
		t.Errorf("reservedPorts of a random listen = %v; want none (the server adds its port once it listens)", got)
	}
}
