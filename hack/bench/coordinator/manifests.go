package main

import (
	"encoding/json"
	"fmt"
)

// benchManifest has one realistic marble type: a shared and a per-marble
// key delivered through a templated file and environment variable.
func benchManifest(marbleType string) []byte {
	return marshalManifest(benchManifestMap(marbleType))
}

// Names in the manifest of the section on several Coordinators.
const (
	// haLimitedType is a marble type with MaxActivations.
	haLimitedType = "limited"
	// haUserSecret is the user-defined secret the benchmark user sets.
	haUserSecret = "userKey"
)

// haManifest is benchManifest with a marble type haLimitedType like
// marbleType but with MaxActivations (high enough never to be reached),
// and a user with the client certificate userPEM who may write the
// user-defined secret haUserSecret.
func haManifest(marbleType, userName, userPEM string) []byte {
	m := benchManifestMap(marbleType)
	marbles := m["Marbles"].(map[string]any)
	limited := map[string]any{"MaxActivations": 1 << 40}
	for k, v := range marbles[marbleType].(map[string]any) {
		limited[k] = v
	}
	marbles[haLimitedType] = limited
	m["Secrets"].(map[string]any)[haUserSecret] = map[string]any{"Type": "symmetric-key", "Size": 256, "UserDefined": true}
	m["Users"] = map[string]any{userName: map[string]any{"Certificate": userPEM, "Roles": []string{"writer"}}}
	m["Roles"] = map[string]any{"writer": map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{haUserSecret}, "Actions": []string{"WriteSecret"}}}
	return marshalManifest(m)
}

func marshalManifest(m map[string]any) []byte {
	raw, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return raw
}

func benchManifestMap(marbleType string) map[string]any {
	return map[string]any{
		"Packages": map[string]any{"pkg": map[string]any{"Debug": true, "UniqueID": "6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"}},
		"Marbles": map[string]any{marbleType: map[string]any{
			"Package": "pkg",
			"Parameters": map[string]any{
				"Files": map[string]any{"/secrets/key": "{{ hex .Secrets.own }}", "/secrets/ca.pem": "{{ pem .MarbleRun.RootCA.Cert }}"},
				"Env":   map[string]any{"SHARED": "{{ hex .Secrets.shared }}"},
				"Argv":  []string{"service", "--listen", ":8080"},
			},
		}},
		"Secrets": map[string]any{
			"shared": map[string]any{"Type": "symmetric-key", "Size": 256, "Shared": true},
			"own":    map[string]any{"Type": "symmetric-key", "Size": 256},
		},
	}
}

// largeManifest has the given numbers of marbles and secrets.
func largeManifest(marbles, secrets int) []byte {
	secretDefs := map[string]any{}
	for i := 0; i < secrets; i++ {
		name := fmt.Sprintf("s%04d", i)
		switch {
		case i < secrets*4/10:
			secretDefs[name] = map[string]any{"Type": "symmetric-key", "Size": 256, "Shared": true}
		case i < secrets*8/10:
			secretDefs[name] = map[string]any{"Type": "symmetric-key", "Size": 128}
		case i < secrets*9/10:
			secretDefs[name] = map[string]any{"Type": "cert-ecdsa", "Size": 256, "Shared": true, "Cert": map[string]any{"DNSNames": []string{name + ".svc"}}}
		default:
			secretDefs[name] = map[string]any{"Type": "plain", "UserDefined": true}
		}
	}
	marbleDefs := map[string]any{}
	for i := 0; i < marbles; i++ {
		shared := fmt.Sprintf("s%04d", i%(secrets*4/10))
		own := fmt.Sprintf("s%04d", secrets*4/10+i%(secrets*4/10))
		cert := fmt.Sprintf("s%04d", secrets*8/10+i%(secrets/10))
		marbleDefs[fmt.Sprintf("m%04d", i)] = map[string]any{
			"Package": "pkg",
			"Parameters": map[string]any{
				"Files": map[string]any{"/tls/cert.pem": "{{ pem .Secrets." + cert + ".Cert }}", "/tls/key.pem": "{{ pem .Secrets." + cert + ".Private }}"},
				"Env":   map[string]any{"SHARED": "{{ hex .Secrets." + shared + " }}", "OWN": "{{ hex .Secrets." + own + " }}"},
				"Argv":  []string{"service"},
			},
		}
	}
	raw, err := json.Marshal(map[string]any{
		"Packages": map[string]any{"pkg": map[string]any{"Debug": true, "UniqueID": "6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"}},
		"Marbles":  marbleDefs,
		"Secrets":  secretDefs,
	})
	if err != nil {
		panic(err)
	}
	return raw
}
