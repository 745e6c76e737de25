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
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	// WriteFile keeps the mode of a leftover tmp file; tokens need 0600.
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
