package v1

import (
	"fmt"
	"strconv"
)

// ParseResourceVersion reads a resourceVersion as the number it is (an
// etcd revision). Compare resourceVersions only this way: as strings "9"
// sorts after "10".
func ParseResourceVersion(rv string) (int64, error) {
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("resourceVersion %q is not a revision number", rv)
	}
	return n, nil
}

// NewerResourceVersion reports whether a is a later version than b. A
// version that is not a number is never newer; any number is newer than
// one that is not.
func NewerResourceVersion(a, b string) bool {
	na, err := ParseResourceVersion(a)
	if err != nil {
		return false
	}
	nb, err := ParseResourceVersion(b)
	return err != nil || na > nb
}
