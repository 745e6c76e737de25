package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
)

// validName is what a sandbox ID or container name may look like: they
// end up in file names, runtime IDs, cgroup paths and guest requests.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ValidName tells whether s may name a sandbox or a container.
func ValidName(s string) bool { return validName.MatchString(s) }

// ParseUser turns "uid[:gid]" into ids. Without a gid, the uid's primary
// group from /etc/passwd of the image unpacked at rootfs is used (0 when it
// has no entry, or rootfs is "").
func ParseUser(user, rootfs string) (uint32, uint32, error) {
	if user == "" {
		return 0, 0, nil
	}
	us, gs, hasGID := strings.Cut(user, ":")
	uid, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: want numeric uid[:gid]: %w", user, err)
	}
	if hasGID {
		gid, err := strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("user %q: want numeric uid[:gid]: %w", user, err)
		}
		return uint32(uid), uint32(gid), nil
	}
	gid, err := primaryGID(rootfs, uint32(uid))
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: %w", user, err)
	}
	return uint32(uid), gid, nil
}

// primaryGID looks uid up in the image's /etc/passwd, read through
// ReadImageFile (the image is hostile: a link out of it, a FIFO or
// a huge file is refused). No /etc/passwd, or no entry, means gid 0, as
// in runc and Docker.
func primaryGID(rootfs string, uid uint32) (uint32, error) {
	fields, err := passwdEntry(rootfs, uid)
	if err != nil || fields == nil {
		return 0, err
	}
	if gid, err := strconv.ParseUint(fields[3], 10, 32); err == nil {
		return uint32(gid), nil
	}
	return 0, nil
}

// maxHome bounds a home directory taken from an image's /etc/passwd.
const maxHome = 1024

// HomeDir is uid's home directory in /etc/passwd of the image unpacked at
// rootfs, or "/" when it has none (or an unusable one): the HOME runc
// gives a process whose environment has none, for the backends that must
// behave as runc does.
func HomeDir(rootfs string, uid uint32) string {
	fields, err := passwdEntry(rootfs, uid)
	if err != nil || len(fields) < 6 {
		return "/"
	}
	home := fields[5]
	if !strings.HasPrefix(home, "/") || len(home) > maxHome || strings.ContainsAny(home, "\x00\n") {
		return "/"
	}
	return home
}

// passwdEntry returns the fields of uid's first line (with at least four
// fields) in /etc/passwd of the image unpacked at rootfs, read through
// ReadImageFile (the image is hostile: a link out of it, a FIFO or a huge
// file is refused); nil without rootfs, passwd or entry.
func passwdEntry(rootfs string, uid uint32) ([]string, error) {
	if rootfs == "" {
		return nil, nil
	}
	b, err := ReadImageFile(rootfs, "/etc/passwd")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	want := strconv.FormatUint(uint64(uid), 10)
	for line := range strings.Lines(string(b)) {
		fields := strings.Split(strings.TrimRight(line, "\n"), ":")
		if len(fields) >= 4 && fields[2] == want {
			return fields, nil
		}
	}
	return nil, nil
}
