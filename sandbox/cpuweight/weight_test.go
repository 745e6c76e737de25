package cpuweight

import "testing"

func TestConversions(t *testing.T) {
	for _, c := range []struct {
		milli          int64
		shares, weight uint64
	}{
		{0, 2, 1}, {1, 2, 1}, {100, 102, 4}, {1000, 1024, 39}, {2000, 2048, 79},
		{256000, 262144, 10000}, {1 << 40, 262144, 10000}, {-5, 2, 1},
	} {
		if s, w := Shares(c.milli), Weight(c.milli); s != c.shares || w != c.weight {
			t.Errorf("milli %d: shares %d, weight %d; want %d, %d", c.milli, s, w, c.shares, c.weight)
		}
	}
}
