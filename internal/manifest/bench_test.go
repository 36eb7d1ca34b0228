package manifest

import (
	"fmt"
	"testing"
	"time"
)

// largeManifest returns a valid manifest with the given number of marbles
// and secrets: 40% shared symmetric keys, 30% per-marble symmetric keys,
// 20% shared cert-ecdsa P-256 and 10% user-defined plain secrets. Every
// marble renders one file and two environment variables from them.
func largeManifest(marbles, secrets int) *Manifest {
	m := &Manifest{
		Packages: map[string]Package{},
		Marbles:  make(map[string]Marble, marbles),
		Secrets:  make(map[string]Secret, secrets),
	}
	for i := range 10 {
		m.Packages[fmt.Sprintf("pkg%d", i)] = Package{SignerID: testSignerID, ProductID: ptr(uint64(i)), SecurityVersion: ptr[uint](1)}
	}
	var shared, perMarble, certs, plain []string
	for i := range secrets {
		name := fmt.Sprintf("secret%04d", i)
		switch i % 10 {
		case 0, 1, 2, 3:
			m.Secrets[name] = Secret{Type: SecretTypeSymmetricKey, Size: 256, Shared: true}
			shared = append(shared, name)
		case 4, 5, 6:
			m.Secrets[name] = Secret{Type: SecretTypeSymmetricKey, Size: 128}
			perMarble = append(perMarble, name)
		case 7, 8:
			m.Secrets[name] = Secret{Type: SecretTypeCertECDSA, Size: 256, Shared: true}
			certs = append(certs, name)
		case 9:
			m.Secrets[name] = Secret{Type: SecretTypePlain, UserDefined: true}
			plain = append(plain, name)
		}
	}
	for i := range marbles {
		cert := certs[i%len(certs)]
		m.Marbles[fmt.Sprintf("marble%04d", i)] = Marble{
			Package: fmt.Sprintf("pkg%d", i%10),
			Parameters: Parameters{
				Files: map[string]File{
					"/etc/app/tls.pem": {Data: fmt.Sprintf("{{ pem .Secrets.%s.Cert }}{{ pem .Secrets.%s.Private }}", cert, cert)},
					"/etc/app/key":     {Data: fmt.Sprintf("{{ raw .Secrets.%s }}", perMarble[i%len(perMarble)])},
				},
				Env: map[string]File{
					"SHARED_KEY": {Data: fmt.Sprintf("{{ hex .Secrets.%s }}", shared[i%len(shared)])},
					"TOKEN":      {Data: fmt.Sprintf("{{ string .Secrets.%s }}", plain[i%len(plain)])},
				},
				Argv: []string{"./app"},
			},
		}
	}
	return m
}

// BenchmarkCheckAndGenerateShared validates a manifest with 1,000 marbles
// and 1,000 secrets and generates its shared secrets.
func BenchmarkCheckAndGenerateShared(b *testing.B) {
	m := largeManifest(1000, 1000)
	ca := newCA(b)
	for b.Loop() {
		if err := m.Check(); err != nil {
			b.Fatal(err)
		}
		shared, err := GenerateShared(m.Secrets, ca, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if len(shared) != 600 {
			b.Fatalf("GenerateShared returned %d secrets, want 600", len(shared))
		}
	}
}

// BenchmarkCheck measures validation alone, template dry run included.
func BenchmarkCheck(b *testing.B) {
	m := largeManifest(1000, 1000)
	for b.Loop() {
		if err := m.Check(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRender measures rendering one compiled marble, as activation does.
func BenchmarkRender(b *testing.B) {
	m := largeManifest(1, 20)
	compiled, err := m.Compile()
	if err != nil {
		b.Fatal(err)
	}
	data, err := dummyTemplateData(m.Secrets)
	if err != nil {
		b.Fatal(err)
	}
	c := compiled["marble0000"]
	for b.Loop() {
		if _, _, err := c.Render(data); err != nil {
			b.Fatal(err)
		}
	}
}
