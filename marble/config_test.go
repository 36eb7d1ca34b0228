package marble

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/issuer"
)

func TestConfigFromEnv(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	gramine := gramineDir(t, "dcap", nil)
	if err := os.WriteFile(filepath.Join(gramine, "quote"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		sim     bool
		wantErr string
	}{
		{
			name: "defaults",
			env:  map[string]string{EnvMarbleType: "backend", EnvSimulation: "1"},
			want: Config{
				MarbleType:      "backend",
				CoordinatorAddr: "localhost:2001",
				DNSNames:        []string{"localhost"},
				UUIDFile:        filepath.Join(wd, "uuid"),
			},
			sim: true,
		},
		{
			name: "all set",
			env: map[string]string{
				EnvMarbleType:      "frontend",
				EnvCoordinatorAddr: "coordinator-mesh-api.marblerun:2001",
				EnvDNSNames:        " frontend, frontend.default ,,10.0.0.7 ",
				EnvUUIDFile:        "/frontend-uid/uuid-file",
				EnvSimulation:      "1",
			},
			want: Config{
				MarbleType:      "frontend",
				CoordinatorAddr: "coordinator-mesh-api.marblerun:2001",
				DNSNames:        []string{"frontend", "frontend.default", "10.0.0.7"},
				UUIDFile:        "/frontend-uid/uuid-file",
			},
			sim: true,
		},
		{
			name: "simulation only with 1",
			env:  map[string]string{EnvMarbleType: "backend", EnvSimulation: "true", EnvAttestationDir: gramine},
			want: Config{
				MarbleType:      "backend",
				CoordinatorAddr: "localhost:2001",
				DNSNames:        []string{"localhost"},
				UUIDFile:        filepath.Join(wd, "uuid"),
			},
		},
		{name: "no TEE", env: map[string]string{EnvMarbleType: "backend", EnvAttestationDir: t.TempDir()}, wantErr: "set OE_SIMULATION=1"},
		{name: "missing type", env: map[string]string{}, wantErr: EnvMarbleType},
		{name: "blank type", env: map[string]string{EnvMarbleType: "  "}, wantErr: EnvMarbleType},
		{
			name:    "address without port",
			env:     map[string]string{EnvMarbleType: "backend", EnvCoordinatorAddr: "coordinator"},
			wantErr: EnvCoordinatorAddr,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromEnv(mapGetenv(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.MarbleType != tc.want.MarbleType || got.CoordinatorAddr != tc.want.CoordinatorAddr ||
				got.UUIDFile != tc.want.UUIDFile || !slices.Equal(got.DNSNames, tc.want.DNSNames) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			_, isSim := got.Issuer.(attestation.SimulationIssuer)
			if isSim != tc.sim {
				t.Fatalf("simulation issuer = %v, want %v (issuer %T)", isSim, tc.sim, got.Issuer)
			}
			if _, isGramine := got.Issuer.(*issuer.Gramine); !tc.sim && !isGramine {
				t.Fatalf("issuer = %T, want Gramine's without %s=1", got.Issuer, EnvSimulation)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	if c.retryTimeout() != DefaultRetryTimeout || c.retryBackoff() != DefaultRetryBackoff {
		t.Fatalf("retry defaults = %v/%v", c.retryTimeout(), c.retryBackoff())
	}
	if c.curve().Params().Name != "P-256" {
		t.Fatalf("default curve = %s", c.curve().Params().Name)
	}
	if c.logger() == nil {
		t.Fatal("nil default logger")
	}
}

func TestHostNames(t *testing.T) {
	c := Config{DNSNames: []string{"svc", "127.0.0.1", "svc", "10.1.2.3", "::1", "fd00::5", "svc.ns"}}
	names, ips := c.hostNames()
	if want := []string{"svc", "svc.ns"}; !slices.Equal(names, want) {
		t.Fatalf("names = %v, want %v", names, want)
	}
	want := []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback, net.ParseIP("10.1.2.3"), net.ParseIP("fd00::5")}
	if len(ips) != len(want) {
		t.Fatalf("ips = %v, want %v", ips, want)
	}
	for i := range want {
		if !ips[i].Equal(want[i]) {
			t.Fatalf("ips = %v, want %v", ips, want)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	base := Config{MarbleType: "m", CoordinatorAddr: "h:1", UUIDFile: "/u"}
	if err := base.check(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	bad := map[string]func(c *Config){
		"no type":          func(c *Config) { c.MarbleType = "" },
		"no uuid file":     func(c *Config) { c.UUIDFile = "" },
		"space in name":    func(c *Config) { c.DNSNames = []string{"a b"} },
		"negative timeout": func(c *Config) { c.RetryTimeout = -1 },
		"address":          func(c *Config) { c.CoordinatorAddr = "nohostport" },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := base
			mutate(&c)
			if err := c.check(); err == nil {
				t.Fatal("invalid config accepted")
			}
		})
	}
}
