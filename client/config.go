package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Config is the CLI's client config file: named contexts, one current,
// like a kubeconfig.
type Config struct {
	CurrentContext string    `json:"current-context"`
	Contexts       []Context `json:"contexts"`
}

// Context is one server and the token to use there.
type Context struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	Token  string `json:"token"`
}

// DefaultConfigPath is $CUBE_CONFIG, else ~/.config/cube/config.yaml.
func DefaultConfigPath() string {
	if p := os.Getenv("CUBE_CONFIG"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".config", "cube", "config.yaml")
}

// LoadConfig reads a config file; a missing file is an empty config.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	return &c, nil
}

// Save writes the config with mode 0600 (it holds tokens), atomically.
func (c *Config) Save(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// A fresh file of a random name (O_EXCL, 0600), never a fixed
	// PATH.tmp: in a directory others may write (--config /tmp/cube.yaml)
	// a local user could have planted that name, as a file of theirs that
	// would then hold the token, or as a symlink to a file root would
	// overwrite.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Upsert sets a context and makes it current.
func (c *Config) Upsert(ctx Context) {
	c.CurrentContext = ctx.Name
	for i := range c.Contexts {
		if c.Contexts[i].Name == ctx.Name {
			c.Contexts[i] = ctx
			return
		}
	}
	c.Contexts = append(c.Contexts, ctx)
}

// Resolve picks the context (name, or the current one) and applies the
// CUBE_SERVER and CUBE_TOKEN overrides.
func (c *Config) Resolve(name string) (Context, error) {
	if name == "" {
		name = c.CurrentContext
	}
	var out Context
	for _, x := range c.Contexts {
		if x.Name == name {
			out = x
		}
	}
	if name != "" && out.Name == "" && os.Getenv("CUBE_SERVER") == "" {
		return out, fmt.Errorf("context %q not found in the client config", name)
	}
	if s := os.Getenv("CUBE_SERVER"); s != "" {
		out.Server = s
	}
	if t := os.Getenv("CUBE_TOKEN"); t != "" {
		out.Token = t
	}
	if out.Server == "" {
		return out, errors.New("no Cube server configured: run `cube up` on this machine, or set CUBE_SERVER and CUBE_TOKEN")
	}
	return out, nil
}
