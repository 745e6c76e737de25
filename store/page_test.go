package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
)

func names(items []*v1.Instance) []string {
	out := []string{}
	for _, in := range items {
		out = append(out, in.Metadata.Name)
	}
	return out
}

// TestListPage reads a prefix page by page: every object once, in key
// order, from one snapshot; a selector page stops at MaxScan keys; a
// compacted snapshot is ErrExpired.
func TestListPage(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	insts := s.Instances()
	var want []string
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("i%02d", i)
		want = append(want, name)
		in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name, Tenant: "t1", Labels: map[string]string{"even": fmt.Sprint(i%2 == 0)}}}
		if err := insts.Create(ctx, insts.Key("t1", name), in); err != nil {
			t.Fatal(err)
		}
	}
	// Another tenant's keys sort right after t1's and must not leak in.
	if err := insts.Create(ctx, insts.Key("t10", "x"), &v1.Instance{Metadata: v1.ObjectMeta{Name: "x"}}); err != nil {
		t.Fatal(err)
	}
	prefix := insts.Prefix("t1")

	tests := []struct {
		limit, maxScan int
		pages          []int // sizes
	}{
		{limit: 3, pages: []int{3, 3, 3, 1}},
		{limit: 5, pages: []int{5, 5}},
		{limit: 10, pages: []int{10}},
		{limit: 0, pages: []int{10}},
		{limit: 4, maxScan: 2, pages: []int{2, 2, 2, 2, 2}},
	}
	for _, tt := range tests {
		var got []string
		var sizes []int
		req := PageRequest[*v1.Instance]{Prefix: prefix, Limit: tt.limit, MaxScan: tt.maxScan}
		var rev int64
		for n := 0; ; n++ {
			page, err := insts.ListPage(ctx, req)
			if err != nil {
				t.Fatalf("limit %d: ListPage = %v", tt.limit, err)
			}
			if n == 0 {
				rev = page.Revision
				// Written after the first page: not in this snapshot.
				late := &v1.Instance{Metadata: v1.ObjectMeta{Name: "i99"}}
				if err := insts.Create(ctx, insts.Key("t1", "i99"), late); err != nil {
					t.Fatal(err)
				}
			} else if page.Revision != rev {
				t.Errorf("limit %d: page %d read revision %d; want the first page's %d", tt.limit, n, page.Revision, rev)
			}
			got = append(got, names(page.Items)...)
			sizes = append(sizes, len(page.Items))
			if page.Next == "" {
				break
			}
			req.From, req.Revision = page.Next, page.Revision
		}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(sizes, tt.pages) {
			t.Errorf("limit %d maxScan %d: pages %v of %v; want pages %v of %v", tt.limit, tt.maxScan, sizes, got, tt.pages, want)
		}
		if err := insts.Delete(ctx, insts.Key("t1", "i99"), ""); err != nil {
			t.Fatal(err)
		}
	}

	// A selector that matches half: MaxScan bounds each page, so a page
	// may hold fewer than Limit.
	even := func(in *v1.Instance) bool { return in.Metadata.Labels["even"] == "true" }
	page, err := insts.ListPage(ctx, PageRequest[*v1.Instance]{Prefix: prefix, Limit: 4, MaxScan: 4, Match: even})
	if err != nil || !reflect.DeepEqual(names(page.Items), []string{"i00", "i02"}) || page.Next == "" {
		t.Fatalf("selector page = %v next %q, %v; want i00 i02 and a next key", names(page.Items), page.Next, err)
	}
	page, err = insts.ListPage(ctx, PageRequest[*v1.Instance]{Prefix: prefix, From: page.Next, Revision: page.Revision, Limit: 4, Match: even})
	if err != nil || !reflect.DeepEqual(names(page.Items), []string{"i04", "i06", "i08"}) || page.Next != "" {
		t.Fatalf("second selector page = %v next %q, %v; want i04 i06 i08 and no next key", names(page.Items), page.Next, err)
	}

	// Compaction past a page's revision expires the snapshot.
	first, err := insts.ListPage(ctx, PageRequest[*v1.Instance]{Prefix: prefix, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := insts.Mutate(ctx, insts.Key("t1", "i00"), func(in *v1.Instance) error { in.Status.IP = "10.0.0.9"; return nil }); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Client().Get(ctx, "/cube/none")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	_, err = insts.ListPage(ctx, PageRequest[*v1.Instance]{Prefix: prefix, From: first.Next, Revision: first.Revision, Limit: 2})
	if !errors.Is(err, errdefs.ErrExpired) {
		t.Errorf("ListPage at a compacted revision = %v; want ErrExpired", err)
	}
	_, err = insts.ListPage(ctx, PageRequest[*v1.Instance]{Prefix: prefix, Revision: resp.Header.Revision + 1000, Limit: 2})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("ListPage at a future revision = %v; want ErrInvalid", err)
	}
}
