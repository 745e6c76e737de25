package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cube-platform/cube/sandbox"
)

// Restart policies.
const (
	RestartAlways    = "Always"
	RestartOnFailure = "OnFailure"
	RestartNever     = "Never"
)

// Config is what the node agent hands a shim, as a JSON file beside the
// socket (see Launch and FilesFor).
type Config struct {
	// Sandbox describes the instance: containers, hostname, network
	// namespace, state dir and cgroup parent.
	Sandbox sandbox.Spec `json:"sandbox"`
	// RestartPolicy is "Always", "OnFailure" or "Never" and applies to every
	// container. Default "Always".
	RestartPolicy string `json:"restartPolicy,omitempty"`
	// MaxRestarts bounds the restarts of each container, counted from
	// RestartCounts; 0 means no bound.
	MaxRestarts int `json:"maxRestarts,omitempty"`
	// RestartCounts are the restarts each container had before this shim,
	// by name: a node that replaces a lost shim carries them over, counting
	// the loss as one more.
	RestartCounts map[string]int `json:"restartCounts,omitempty"`
	// Exited are the containers that ended for good under a shim this one
	// replaces, by name: they keep that state and are not started again.
	Exited map[string]sandbox.ContainerState `json:"exited,omitempty"`
	// LogDir receives one CRI-format log per container, <LogDir>/<name>.log.
	// The shim never removes it; the node agent does, after Shutdown.
	LogDir string `json:"logDir"`
	// Socket is the unix socket path the API is served on (at most 107
	// bytes). Its siblings hold the pid, config and the shim's own log; see
	// FilesFor.
	Socket string `json:"socket"`
	// Backend names the sandbox backend: "runc" (default) or "microvm"
	// (see Backends).
	Backend string `json:"backend,omitempty"`
	// Runtime is the runc binary of the runc backend, a path or a name in
	// PATH. Default "runc".
	Runtime string `json:"runtime,omitempty"`
	// VM configures the microvm backend (kernel, initramfs, accelerator).
	VM sandbox.VMOptions `json:"vm,omitzero"`
	// ExtraFiles are handed to the shim process from fd FirstExtraFD on
	// (a template's memory: VM.TemplateMemFD names it); not saved.
	ExtraFiles []*os.File `json:"-"`
	// LogMaxBytes is the size at which a container log rotates. Default 10 MiB.
	LogMaxBytes int64 `json:"logMaxBytes,omitempty"`
	// LogMaxFiles is how many files of each container log are kept, the
	// live one included. Default 3.
	LogMaxFiles int `json:"logMaxFiles,omitempty"`
	// StopGrace is the SIGTERM-to-SIGKILL grace when the shim stops its
	// containers on its own (SIGTERM to the shim, Shutdown without a grace).
	// JSON: nanoseconds. Default 10s.
	StopGrace time.Duration `json:"stopGrace,omitempty"`
	// Debug turns on debug logs in the shim's own log.
	Debug bool `json:"debug,omitempty"`
	// AwaitStart makes the shim create the sandbox but start no container
	// until Client.Start. The node agent launches the shim while it still
	// attaches the instance's network, and calls Start once the network
	// is ready: no container may run before that.
	AwaitStart bool `json:"awaitStart,omitempty"`
	// Warm makes this a warm shim: it holds a warm VM (microvm.Warm) for
	// no instance yet, until Adopt hands it one, and Sandbox, LogDir and
	// the restart fields are unused until then (see warm_linux.go).
	Warm *WarmSpec `json:"warm,omitempty"`
}

// WarmSpec is what a warm shim warms: a clone of the template VM names
// (TemplateDir and TemplateMemFD, the memory as an extra file), of
// VCPUs and MemoryMiB.
type WarmSpec struct {
	VCPUs     int `json:"vcpus"`
	MemoryMiB int `json:"memoryMiB"`
	// CgroupParent is the warm VM's cgroup until it is adopted.
	CgroupParent string `json:"cgroupParent"`
	// Program is a static binary the rehearsal's container runs ("":
	// none; see microvm.WarmOptions).
	Program string `json:"program,omitempty"`
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.RestartPolicy == "" {
		c.RestartPolicy = RestartAlways
	}
	if c.Backend == "" {
		c.Backend = sandbox.BackendRunc
	}
	if c.Runtime == "" {
		c.Runtime = "runc"
	}
	if c.LogMaxBytes <= 0 {
		c.LogMaxBytes = 10 << 20
	}
	if c.LogMaxFiles <= 0 {
		c.LogMaxFiles = 3
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 10 * time.Second
	}
	return c
}

// Validate checks what the shim needs before it touches the host; the
// sandbox backend validates the sandbox spec itself.
func (c Config) Validate() error {
	switch c.RestartPolicy {
	case RestartAlways, RestartOnFailure, RestartNever, "":
	default:
		return fmt.Errorf("shim config: restart policy %q: want Always, OnFailure or Never", c.RestartPolicy)
	}
	if c.MaxRestarts < 0 {
		return fmt.Errorf("shim config: max restarts %d is negative", c.MaxRestarts)
	}
	if !filepath.IsAbs(c.Socket) || len(c.Socket) > 107 {
		return fmt.Errorf("shim config: socket %q must be an absolute path of at most 107 bytes", c.Socket)
	}
	if c.Warm != nil {
		return c.Warm.validate(c)
	}
	if !filepath.IsAbs(c.LogDir) {
		return fmt.Errorf("shim config: log dir %q must be an absolute path", c.LogDir)
	}
	if c.Sandbox.ID == "" || len(c.Sandbox.Containers) == 0 {
		return errors.New("shim config: the sandbox needs an id and at least one container")
	}
	return nil
}

func (w *WarmSpec) validate(c Config) error {
	switch {
	case c.Backend != sandbox.BackendMicroVM:
		return fmt.Errorf("shim config: a warm shim is a microvm's, not %q", c.Backend)
	case c.VM.TemplateDir == "" || c.VM.TemplateMemFD <= 0:
		return errors.New("shim config: a warm shim needs a template (vm.templateDir and its memory's fd)")
	case w.VCPUs <= 0 || w.MemoryMiB <= 0:
		return fmt.Errorf("shim config: warm vm size %dx%dM", w.VCPUs, w.MemoryMiB)
	case w.CgroupParent != "" && !filepath.IsAbs(w.CgroupParent):
		return fmt.Errorf("shim config: warm cgroup %q must be an absolute path", w.CgroupParent)
	}
	return nil
}

// Files are the paths a shim keeps beside its socket: for socket
// "/run/cube/x/shim.sock" they are shim.json, shim.pid and shim.log in the
// same directory.
type Files struct {
	Config string // the Config, written by Launch
	Pid    string // the shim's pid, held under an exclusive flock while it runs
	Log    string // the shim's own stdout/stderr
}

// FilesFor returns the files of the shim serving socket.
func FilesFor(socket string) Files {
	base := strings.TrimSuffix(socket, filepath.Ext(socket))
	return Files{Config: base + ".json", Pid: base + ".pid", Log: base + ".log"}
}

// LoadConfig reads a Config file written by Launch.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("shim config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("shim config %s: %w", path, err)
	}
	return c, nil
}

// writeConfig writes c atomically (a reader never sees half a file).
func writeConfig(path string, c Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write shim config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write shim config: %w", err)
	}
	return nil
}
