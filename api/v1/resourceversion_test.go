package v1

import "testing"

func TestNewerResourceVersion(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"10", "9", true}, // as strings "9" > "10"
		{"9", "10", false},
		{"10", "10", false},
		{"100", "99", true},
		{"5", "", true},
		{"", "5", false},
		{"x", "5", false},
		{"-1", "", false},
	}
	for _, tt := range tests {
		if got := NewerResourceVersion(tt.a, tt.b); got != tt.want {
			t.Errorf("NewerResourceVersion(%q, %q) = %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
