package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHomeDir(t *testing.T) {
	long := "/" + strings.Repeat("h", maxHome)
	cases := []struct {
		name   string
		passwd string // "" writes no /etc/passwd
		uid    uint32
		want   string
	}{
		{"entry", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/bash\n", 1000, "/home/app"},
		{"root", "root:x:0:0:root:/root:/bin/sh\n", 0, "/root"},
		{"no entry", "root:x:0:0:root:/root:/bin/sh\n", 1000, "/"},
		{"no passwd", "", 1000, "/"},
		{"short line", "app:x:1000:1000\n", 1000, "/"},
		{"relative home", "app:x:1000:1000::home/app:/bin/sh\n", 1000, "/"},
		{"huge home", "app:x:1000:1000::" + long + ":/bin/sh\n", 1000, "/"},
	}
	for _, c := range cases {
		root := t.TempDir()
		if c.passwd != "" {
			if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte(c.passwd), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := HomeDir(root, c.uid); got != c.want {
			t.Errorf("%s: HomeDir(%d) = %q; want %q", c.name, c.uid, got, c.want)
		}
	}
	if got := HomeDir("", 0); got != "/" {
		t.Errorf("HomeDir without a rootfs = %q; want /", got)
	}
}
