package kernel

import (
	"strings"
)

// scriptPrefix starts build.sh's own lines: "cube-kernel: phase compile".
const scriptPrefix = "cube-kernel: "

// compileSteps is about how many kbuild step lines ("  CC      x.o",
// "  LD      vmlinux", ...) `make vmlinux` prints for config.fragment,
// counted on a real build (1710 on 2026-12-01); progress in PhaseCompile is steps seen over
// this, capped below 100 until the build is installed.
const compileSteps = 1710

// percent maps a phase and the compile steps seen to 0-100. Unpacking
// and configuring take about a tenth of a build, compiling the rest.
func percent(p Phase, steps int) int {
	switch p {
	case PhaseUnpack:
		return 2
	case PhaseConfig:
		return 8
	case PhaseCompile:
		pc := 10 + steps*88/compileSteps
		return min(pc, 98)
	case PhaseInstall:
		return 99
	case PhaseDone:
		return 100
	}
	return 0
}

// parseProgress folds one line of build output into the status: phase
// lines of build.sh move the phase, kbuild step lines in the compile
// phase count towards its progress. Anything else leaves it as it is.
func parseProgress(st Status, steps int, line string) (Status, int) {
	if rest, ok := strings.CutPrefix(line, scriptPrefix+"phase "); ok {
		name, _, _ := strings.Cut(rest, " ")
		switch p := Phase(name); p {
		case PhaseUnpack, PhaseConfig, PhaseCompile, PhaseInstall:
			st.Phase = p
		case "lock":
			st.Phase = PhaseWaiting
		}
		st.Percent = percent(st.Phase, steps)
		return st, steps
	}
	if st.Phase != PhaseCompile {
		return st, steps
	}
	if tag, target, ok := kbuildStep(line); ok {
		steps++
		st.Step = tag + " " + target
		st.Percent = percent(st.Phase, steps)
	}
	return st, steps
}

// kbuildStep recognizes kbuild's quiet output: two spaces, an upper-case
// tag, spaces, a target ("  CC      kernel/fork.o").
func kbuildStep(line string) (tag, target string, ok bool) {
	rest, ok := strings.CutPrefix(line, "  ")
	if !ok {
		return "", "", false
	}
	tag, target, ok = strings.Cut(rest, " ")
	if !ok || tag == "" || len(tag) > 12 {
		return "", "", false
	}
	for _, c := range tag {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return "", "", false
		}
	}
	target = strings.TrimSpace(target)
	if target == "" || len(target) > 256 {
		return "", "", false
	}
	return tag, target, true
}
