package cli

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/mrcluster/mrcluster/internal/flags"
)

// envName is the environment variable that sets a flag.
func envName(flagName string) string { return flags.Env(flagName) }

// parseWithFile parses args, then fills every flag not given on the
// command line from MRCLUSTER_<FLAG>, then from the TOML file named by
// --config (or MRCLUSTER_CONFIG). It returns where each value came from.
func parseWithFile(fs *flag.FlagSet, args []string) (map[string]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, unknownFlag(fs, err)
	}
	sources := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { sources[f.Name] = "default" })
	fs.Visit(func(f *flag.Flag) { sources[f.Name] = "flag" })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if sources[f.Name] != "default" || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment variable %s=%q: %w", envName(f.Name), v, e)
			}
			sources[f.Name] = "env " + envName(f.Name)
		}
	})
	if err != nil {
		return nil, err
	}
	file := fs.Lookup("config")
	if file == nil || file.Value.String() == "" {
		return sources, nil
	}
	path := file.Value.String()
	var settings map[string]any
	if _, err := toml.DecodeFile(path, &settings); err != nil {
		return nil, fmt.Errorf("configuration file %s: %w", path, err)
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			var names []string
			fs.VisitAll(func(f *flag.Flag) {
				if f.Name != "config" {
					names = append(names, f.Name)
				}
			})
			return nil, fmt.Errorf("configuration file %s: unknown setting %q; settings are named as the flags: %s", path, k, strings.Join(names, ", "))
		}
		if sources[k] != "default" {
			continue // a flag or the environment wins
		}
		v := settings[k]
		s := fmt.Sprint(v)
		if list, ok := v.([]any); ok {
			parts := make([]string, len(list))
			for i, p := range list {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		}
		if err := fs.Set(k, s); err != nil {
			return nil, fmt.Errorf("configuration file %s: %s = %v: %w", path, k, v, err)
		}
		sources[k] = "file " + path
	}
	return sources, nil
}
