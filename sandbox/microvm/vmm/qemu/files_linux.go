package qemu

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
)

// libDirs are the dynamic loader's default search path on Debian amd64
// (QEMU's binary carries no RPATH/RUNPATH).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib"}

// binaryFiles returns the ELF file at path, its interpreter and every
// shared library it needs, transitively: what must be bound into the
// jail for it to run.
func binaryFiles(path string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var walk func(p string) error
	walk = func(p string) error {
		if seen[p] {
			return nil
		}
		seen[p] = true
		out = append(out, p)
		f, err := elf.Open(p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		defer f.Close()
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return fmt.Errorf("read interpreter of %s: %w", p, err)
			}
			if i := len(b); i > 0 && b[i-1] == 0 {
				b = b[:i-1]
			}
			if err := walk(string(b)); err != nil {
				return err
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("read libraries of %s: %w", p, err)
		}
		for _, lib := range libs {
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					found = filepath.Join(d, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("library %s of %s not found in %v", lib, p, libDirs)
			}
			if err := walk(found); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(path); err != nil {
		return nil, err
	}
	return out, nil
}

// jailFiles is what every jailed QEMU of one binary needs: the binary,
// its libraries, the loader cache, the microvm firmware and (for TCG)
// the accelerator module QEMU loads at run time.
type jailFiles struct {
	common []jail.Bind
	tcg    []jail.Bind
}

func findJailFiles(binary string) (*jailFiles, error) {
	real, err := filepath.EvalSymlinks(binary)
	if err != nil {
		return nil, fmt.Errorf("qemu binary %s: %w", binary, err)
	}
	files, err := binaryFiles(real)
	if err != nil {
		return nil, err
	}
	jf := &jailFiles{}
	for i, f := range files {
		dst := f
		if i == 0 {
			dst = binary
		}
		jf.common = append(jf.common, jail.Bind{Src: f, Dst: dst, Exec: true})
	}
	if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
		jf.common = append(jf.common, jail.Bind{Src: "/etc/ld.so.cache", Dst: "/etc/ld.so.cache"})
	}
	// QEMU finds its data and modules relative to its own binary.
	prefix := filepath.Dir(filepath.Dir(binary))
	// microvm's firmware: qboot.rom with acpi=off, bios-microvm.bin
	// otherwise.
	for _, fw := range []string{"qboot.rom", "bios-microvm.bin"} {
		bios := filepath.Join(prefix, "share/qemu", fw)
		if _, err := os.Stat(bios); err != nil {
			return nil, fmt.Errorf("microvm firmware: %w (apt-get install qemu-system-x86)", err)
		}
		jf.common = append(jf.common, jail.Bind{Src: bios, Dst: bios})
	}
	for _, d := range []string{"null", "zero", "urandom"} {
		jf.common = append(jf.common, jail.Bind{Src: "/dev/" + d, Dst: "/dev/" + d, Dev: true, Writable: true})
	}
	mod := filepath.Join(prefix, "lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so")
	if _, err := os.Stat(mod); err == nil {
		libs, err := binaryFiles(mod)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			jf.tcg = append(jf.tcg, jail.Bind{Src: l, Dst: l, Exec: true})
		}
	}
	return jf, nil
}

// binds is the jail's content for one VM; kernel and initrd sit at fixed
// paths so the VMM's argv names no host path.
func (jf *jailFiles) binds(cfg *vmm.Config) []jail.Bind {
	seen := map[string]bool{}
	var out []jail.Bind
	add := func(bs ...jail.Bind) {
		for _, b := range bs {
			if !seen[b.Dst] {
				seen[b.Dst] = true
				out = append(out, b)
			}
		}
	}
	add(jf.common...)
	if accelOf(cfg) == vmm.AccelTCG {
		add(jf.tcg...)
	} else {
		add(jail.Bind{Src: "/dev/kvm", Dst: "/dev/kvm", Dev: true, Writable: true})
	}
	add(jail.Bind{Src: cfg.Kernel, Dst: jailKernel})
	if cfg.Initrd != "" {
		add(jail.Bind{Src: cfg.Initrd, Dst: jailInitrd})
	}
	return out
}

const (
	jailKernel = "/vm/vmlinux"
	jailInitrd = "/vm/initrd"
)

func accelOf(cfg *vmm.Config) vmm.Accel {
	if cfg.Accel == "" {
		return vmm.AccelTCG
	}
	return cfg.Accel
}
