package network

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkAttach times Attach (CNI ADD, and the packet filter's elements)
// of a pinned instance with no published port, next to an instance of
// another tenant; BenchmarkTeardown times its Teardown. Run as root:
// go test -run XXX -bench 'Attach|Teardown' ./network
func BenchmarkAttach(b *testing.B)   { benchAttach(b, false) }
func BenchmarkTeardown(b *testing.B) { benchAttach(b, true) }

func benchAttach(b *testing.B, teardown bool) {
	requireCNI(b)
	cfg := testConfig(b)
	ctx := context.Background()
	m, err := NewCNI(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Setup(ctx, "bench-other", "tenant-b", nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		id := "bench-" + strconv.Itoa(i)
		b.StopTimer()
		if _, err := m.Pin(ctx, id, testTenant, nil); err != nil {
			b.Fatal(err)
		}
		if !teardown {
			b.StartTimer()
		}
		if _, err := m.Attach(ctx, id); err != nil {
			b.Fatal(err)
		}
		if teardown {
			b.StartTimer()
		} else {
			b.StopTimer()
		}
		if err := m.Teardown(ctx, id); err != nil {
			b.Fatal(err)
		}
		if teardown {
			b.StopTimer()
		}
	}
}

// BenchmarkFilterAdd times adding one instance's elements to the filter
// (what Attach adds to CNI ADD), for a tenant that has its chains.
func BenchmarkFilterAdd(b *testing.B) {
	requireCNI(b)
	cfg := testConfig(b)
	ctx := context.Background()
	m, err := NewCNI(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	f := m.(*cniManager).filter
	p := func(i int) port {
		return port{ID: "p" + strconv.Itoa(i), Veth: "vethb" + strconv.Itoa(i), MAC: "02:00:00:00:00:01",
			IP: "10.255." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250+1), Group: tenantGroup(testTenant, "")}
	}
	if err := f.add(ctx, p(60000)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := f.add(ctx, p(i)); err != nil {
			b.Fatal(err)
		}
	}
}
