//go:build !linux

package network

import "errors"

// elements needs netlink; the filter falls back to nft scripts.
func (f *filter) elements(p port, del bool) error {
	return errors.New("nftables over netlink is only supported on linux")
}
