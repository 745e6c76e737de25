package agentapi

import (
	"regexp"
	"strings"
	"testing"
)

// shapes pairs each hand-written check with the regexp it replaced (the
// definition of the language it must accept: the agent no longer pays to
// compile these at start, the tests do).
var shapes = []struct {
	name  string
	check func(string) bool
	re    *regexp.Regexp
}{
	{"name", validName, regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)},
	{"exec id", validExecID, regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)},
	{"serial", validSerial, regexp.MustCompile(`^[A-Za-z0-9_-]{1,20}$`)},
	{"hostname", validHostname, regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$`)},
	{"mac", validMAC, regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`)},
	{"search", validSearch, regexp.MustCompile(`^[A-Za-z0-9.-]{1,253}$`)},
	{"option", validOption, regexp.MustCompile(`^[a-z0-9-]{1,32}(:[0-9]{1,4})?$`)},
}

// shapeCases are inputs at every edge of the shapes: lengths at and past
// each bound, each class's neighbours, separators at either end, bytes
// that are not ASCII or not UTF-8, and a trailing newline (which a
// careless $ would accept).
func shapeCases() []string {
	cases := []string{
		"", "a", "A", "0", "-", "_", ".", ":", " ", "\n", "\x00", "\xff", "é", "a\n", "\na",
		"app", "App", "a-b", "-ab", "ab-", "a--b", "a_b", "a.b", ".ab", "ab.", "a:b", "a/b",
		"web-1", "e1", "exec.1_x-2", "_e", ".e", "img0", "rw", "vm-test", "h.example.com",
		"02:00:0a:58:00:05", "02:00:0A:58:00:05", "02:00:0a:58:00", "02:00:0a:58:00:05:", "02-00-0a-58-00-05",
		"0:00:0a:58:00:055", "g2:00:0a:58:00:05", "02:00:0a:58:00:0\n",
		"svc.cube", "default.svc.cube", "ndots:2", "ndots:", "ndots:12345", "ndots:1234", ":5",
		"rotate", "attempts:3:4", "Ndots:2", "edns0", "ndots:a",
	}
	for _, n := range []int{19, 20, 21, 31, 32, 33, 62, 63, 64, 65, 252, 253, 254, 255, 256, 257} {
		for _, c := range []string{"a", "Z", "9", "-", ".", "_"} {
			cases = append(cases, strings.Repeat(c, n), "a"+strings.Repeat(c, n-2)+"a", "a"+strings.Repeat(c, n-1))
		}
		cases = append(cases, strings.Repeat("a", n)+":1", "x:"+strings.Repeat("1", n%6))
	}
	return cases
}

func TestShapesMatchTheirRegexps(t *testing.T) {
	for _, s := range shapes {
		for _, in := range shapeCases() {
			if got, want := s.check(in), s.re.MatchString(in); got != want {
				t.Errorf("%s check(%q) = %v; its regexp says %v", s.name, in, got, want)
			}
		}
	}
}

func TestShapes(t *testing.T) {
	tests := []struct {
		check func(string) bool
		in    string
		want  bool
	}{
		{validName, "app", true},
		{validName, strings.Repeat("a", 63), true},
		{validName, strings.Repeat("a", 64), false},
		{validName, "-app", false},
		{validName, "App", false},
		{validExecID, "e.1_x-2", true},
		{validExecID, strings.Repeat("e", 64), true},
		{validExecID, strings.Repeat("e", 65), false},
		{validExecID, ".e", false},
		{validSerial, strings.Repeat("s", 20), true},
		{validSerial, strings.Repeat("s", 21), false},
		{validSerial, "a.b", false},
		{validHostname, "h.example.com", true},
		{validHostname, "h.", false},
		{validMAC, "02:00:0a:58:00:05", true},
		{validMAC, "02:00:0A:58:00:05", false},
		{validMAC, "02:00:0a:58:00:05\n", false},
		{validSearch, strings.Repeat("d", 253), true},
		{validSearch, strings.Repeat("d", 254), false},
		{validOption, "ndots:5", true},
		{validOption, "rotate", true},
		{validOption, "ndots:", false},
		{validOption, "ndots:12345", false},
		{validOption, "a:1:2", false},
	}
	for _, tt := range tests {
		if got := tt.check(tt.in); got != tt.want {
			t.Errorf("check(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

// entropyOK is the rule for Setup's and Resume's entropy, said plainly:
// none, or 32 to 256 bytes of anything (a regexp counts runes, not bytes).
func entropyOK(b []byte) bool { return len(b) == 0 || len(b) >= 32 && len(b) <= 256 }

func TestEntropyBounds(t *testing.T) {
	for _, n := range []int{0, 1, 31, 32, 33, 255, 256, 257, 4096} {
		b := make([]byte, n)
		if got, want := validateEntropy(b) == nil, entropyOK(b); got != want {
			t.Errorf("validateEntropy(%d bytes) ok = %v; want %v", n, got, want)
		}
	}
}

// FuzzShapes: on any input, every hand-written check agrees with the
// regexp it replaced, and the entropy bound with its plain rule (on the
// bytes alone, in Setup and in Resume).
func FuzzShapes(f *testing.F) {
	for _, in := range shapeCases() {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, s := range shapes {
			if got, want := s.check(in), s.re.MatchString(in); got != want {
				t.Errorf("%s check(%q) = %v; its regexp says %v", s.name, in, got, want)
			}
		}
		b := []byte(in)
		want := entropyOK(b)
		setup := &SetupRequest{Entropy: b, Containers: []*ContainerSpec{{Name: "app", Args: []string{"sh"}}}}
		resume := &ResumeRequest{TimeUnixNano: 1, Entropy: b}
		if got := validateEntropy(b) == nil; got != want {
			t.Errorf("validateEntropy(%d bytes) ok = %v; want %v", len(b), got, want)
		}
		if got := setup.Validate() == nil; got != want {
			t.Errorf("Setup with %d bytes of entropy: Validate() = %v; want ok=%v", len(b), setup.Validate(), want)
		}
		if got := resume.Validate() == nil; got != want {
			t.Errorf("Resume with %d bytes of entropy: Validate() = %v; want ok=%v", len(b), resume.Validate(), want)
		}
	})
}
