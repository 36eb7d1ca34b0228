package injector

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
)

func TestEscapePointerToken(t *testing.T) {
	for in, want := range map[string]string{
		"cpu":               "cpu",
		"sgx.intel.com/epc": "sgx.intel.com~1epc",
		"a~b/c":             "a~0b~1c",
		"~1":                "~01",
		"/~":                "~1~0",
	} {
		if got := escapePointerToken(in); got != want {
			t.Errorf("escapePointerToken(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAppendString compares the JSON string writer with encoding/json.
func TestAppendString(t *testing.T) {
	inputs := []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r", "\x00\x01\x1f\x7f", "ünïcødé ✓ 𝄞", "bad\xffutf8\xc3", "\u2028\u2029", "<html>&"}
	for _, s := range inputs {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("appendString(%q) = %s: invalid JSON: %v", s, got, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if !utf8.ValidString(s) {
			// encoding/json replaces each invalid byte.
			var b strings.Builder
			for i := 0; i < len(s); {
				r, n := utf8.DecodeRuneInString(s[i:])
				b.WriteRune(r)
				i += n
			}
			want = b.String()
		}
		if back != want {
			t.Errorf("appendString(%q) decodes to %q, want %q", s, back, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("sgx.intel.com/epc")
	f.Add("\xff\"\\\n")
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, got, err)
		}
		ref, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var refBack string
		if err := json.Unmarshal(ref, &refBack); err != nil {
			t.Fatal(err)
		}
		if back != refBack {
			t.Fatalf("appendString(%q) decodes to %q, encoding/json to %q", s, back, refBack)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, key := range []string{sgxresource.IntelEPC, sgxresource.AzureEPC, sgxresource.AlibabaEPC, "example.com/sgx-epc"} {
		if err := withResource(key).Validate(); err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
	bad := map[string]Config{
		"resource without domain": withResource("epc"),
		"empty resource":          withResource(""),
		"resource with space":     withResource("example.com/sgx epc"),
		"coord without port":      {CoordAddr: "coordinator", ClusterDomain: "cluster.local", SGXResource: sgxresource.IntelEPC},
		"coord empty host":        {CoordAddr: ":2001", ClusterDomain: "cluster.local", SGXResource: sgxresource.IntelEPC},
		"bad cluster domain":      {CoordAddr: "c:1", ClusterDomain: "Cluster_Local", SGXResource: sgxresource.IntelEPC},
	}
	for name, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// All problems are reported at once.
	err := Config{}.Validate()
	if err == nil || !strings.Contains(err.Error(), "coordinator address") || !strings.Contains(err.Error(), "cluster domain") ||
		!strings.Contains(err.Error(), "SGX resource") {
		t.Errorf("zero config: %v", err)
	}
}

func TestLimits(t *testing.T) {
	for key, want := range map[string]string{
		sgxresource.IntelEPC:   "sgx.intel.com/epc=10Mi sgx.intel.com/enclave=1 sgx.intel.com/provision=1",
		sgxresource.AzureEPC:   "kubernetes.azure.com/sgx_epc_mem_in_MiB=10",
		sgxresource.AlibabaEPC: "alibabacloud.com/sgx_epc_MiB=10",
		"example.com/enclave":  "example.com/enclave=10",
	} {
		var parts []string
		for _, l := range withResource(key).Limits() {
			parts = append(parts, l.Name+"="+l.Quantity)
		}
		if got := strings.Join(parts, " "); got != want {
			t.Errorf("%s: %s, want %s", key, got, want)
		}
	}
}

func TestMutateDirect(t *testing.T) {
	pod := &Pod{
		Metadata: PodMeta{Labels: map[string]string{LabelMarbleType: "db"}},
		Spec: PodSpec{Containers: []*Container{{
			Name:      "db",
			Env:       []EnvVar{{Name: "A"}},
			Resources: &Resources{Limits: map[string]json.RawMessage{}, Requests: map[string]json.RawMessage{sgxresource.IntelEnclave: json.RawMessage(`null`)}},
		}}},
	}
	d := Mutate(pod, Request{Namespace: "NS"}, testConfig())
	if d.Outcome != Mutated || d.MarbleType != "db" || d.Ops != 10 {
		t.Fatalf("decision %+v", d)
	}
	for _, want := range []string{
		`{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"EDG_MARBLE_DNS_NAMES","value":"db,db.ns,db.ns.svc.cluster.local"}}`,
		`{"op":"add","path":"/spec/containers/0/resources/limits/sgx.intel.com~1enclave","value":"1"}`,
	} {
		if !strings.Contains(string(d.Patch), want) {
			t.Errorf("patch lacks %s:\n%s", want, d.Patch)
		}
	}
	for o, want := range map[Outcome]string{Unchanged: "unchanged", Mutated: "mutated", Denied: "denied", Outcome(7): "Outcome(7)"} {
		if o.String() != want {
			t.Errorf("%d.String() = %s", int(o), o.String())
		}
	}
}
