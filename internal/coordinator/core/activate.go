package core

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/google/uuid"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/pki"
	"github.com/marblemesh/marblemesh/internal/manifest"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// ActivationRequest is a marble's request to join the mesh.
type ActivationRequest struct {
	// PeerCert is the certificate the marble presented on the connection.
	PeerCert *x509.Certificate
	// Quote is evidence over SHA-256(PeerCert DER); empty in simulation.
	Quote []byte
	// CSR is a PKCS#10 request in DER with the marble's DNS names and IPs.
	CSR        []byte
	MarbleType string
	UUID       string
}

// Parameters are what an activated marble receives.
type Parameters struct {
	Files map[string][]byte
	Env   map[string][]byte
	Argv  []string
}

// Activate checks a marble against the manifest and returns its
// certificate, secrets and rendered parameters. It writes to the store
// only for marbles whose activations are limited.
func (c *Core) Activate(ctx context.Context, req ActivationRequest) (*Parameters, error) {
	v := c.view.Load()
	if v.state != StateAcceptingMarbles {
		return nil, newError(KindFailedPrecondition, nil, "the Coordinator does not accept marbles yet (state: %s)", v.state)
	}
	if req.PeerCert == nil {
		return nil, newError(KindUnauthenticated, nil, "no TLS client certificate presented")
	}
	dep := v.dep
	marble, ok := dep.manifest.Marbles[req.MarbleType]
	if !ok {
		return nil, newError(KindPermissionDenied, nil, "unknown marble type %q requested", req.MarbleType)
	}
	pkg := dep.manifest.Packages[marble.Package]
	id, err := uuid.Parse(req.UUID)
	if err != nil {
		return nil, newError(KindInvalidArgument, nil, "invalid UUID %q", req.UUID)
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, newError(KindInvalidArgument, err, "invalid certificate signing request")
	}
	uuidStr := id.String()
	c.metrics.activation(req.MarbleType, false)
	if !c.cfg.Simulation {
		if err := c.verifyEvidence(ctx, req, marble.Package, pkg); err != nil {
			c.log.Warn("marble rejected", "type", req.MarbleType, "uuid", uuidStr, "reason", err.Error())
			return nil, err
		}
	}

	now := c.cfg.Now()
	// The CSR's own key is not used: the Coordinator issues a fresh key and
	// returns it, as marbles expect. The CSR only carries the names, and it
	// reaches us over the TLS channel the evidence binds, so its signature
	// would prove nothing further and is not checked.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating marble key: %w", err)
	}
	leaf, err := pki.IssueMarbleCert(dep.marbleRoot, dep.intermediate.Key, pki.MarbleCertRequest{
		UUID: uuidStr, MarbleType: req.MarbleType,
		DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses, PublicKey: &key.PublicKey,
	}, now)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding marble key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encoding marble public key: %w", err)
	}

	compiled := dep.compiled[req.MarbleType]
	data, err := c.templateData(dep, compiled, id, req.MarbleType, marble.DisableSecretBinding)
	if err != nil {
		return nil, err
	}
	data.MarbleRun = dep.reservedCA
	data.MarbleRun.MarbleCert = manifest.Secret{Cert: manifest.Certificate(*leaf), Private: keyDER, Public: pubDER}
	files, env, err := compiled.Render(data)
	if err != nil {
		return nil, newError(KindInternal, err, "rendering the parameters of marble type %q", req.MarbleType)
	}
	if env == nil {
		env = map[string][]byte{}
	}
	leafPEM := certPEM(leaf)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	env[marbleenv.RootCA] = dep.marbleRootPEM
	env[marbleenv.CertificateChain] = append(append([]byte{}, leafPEM...), dep.intermediatePEM...)
	env[marbleenv.PrivateKey] = keyPEM
	env[marbleenv.CoordinatorRootCA] = dep.rootPEM
	ttls, err := dep.manifest.TTLSConfig(req.MarbleType, string(dep.marbleRootPEM), string(leafPEM), string(keyPEM), data.Secrets)
	if err != nil {
		return nil, newError(KindInternal, err, "building the TLS configuration of marble type %q", req.MarbleType)
	}
	if ttls != nil {
		env[marbleenv.TransparentTLS] = ttls
	}

	if marble.MaxActivations > 0 {
		if err := c.countActivation(ctx, dep, req.MarbleType, marble.MaxActivations); err != nil {
			return nil, err
		}
	}
	c.metrics.activation(req.MarbleType, true)
	c.events.add(Event{Time: now, Activation: ActivationEvent{MarbleType: req.MarbleType, UUID: uuidStr, Quote: req.Quote}})
	c.log.Info("marble activated", "type", req.MarbleType, "uuid", uuidStr)
	return &Parameters{Files: files, Env: env, Argv: slices.Clone(marble.Parameters.Argv)}, nil
}

// templateData gathers the secrets the marble's templates refer to.
func (c *Core) templateData(dep *deployment, compiled *manifest.Compiled, id uuid.UUID, marbleType string, disableBinding bool) (*manifest.TemplateData, error) {
	names, all := compiled.SecretNames()
	if all {
		names = nil
	} else if len(names) == 0 {
		return &manifest.TemplateData{}, nil
	}
	now := c.cfg.Now()
	// The per-marble secrets are derived into a new map, to which the
	// shared and user-defined values are added: only those the templates
	// refer to, when that is known, so that a large manifest costs nothing
	// extra per activation.
	derive := func(rootSecret []byte, base map[string]manifest.Secret) (map[string]manifest.Secret, error) {
		merged, err := manifest.DeriveForMarble(dep.manifest.Secrets, names, rootSecret, id, marbleType, disableBinding, dep.marbleCA(), now)
		if err != nil {
			return nil, newError(KindInternal, err, "deriving secrets for marble type %q", marbleType)
		}
		if merged == nil {
			merged = map[string]manifest.Secret{}
		}
		if all {
			for k, s := range base {
				merged[k] = s
			}
			return merged, nil
		}
		for _, k := range names {
			if s, ok := base[k]; ok {
				merged[k] = s
			}
		}
		return merged, nil
	}
	data := &manifest.TemplateData{}
	var err error
	if data.Secrets, err = derive(dep.rootSecret, dep.secrets); err != nil {
		return nil, err
	}
	data.Previous.Secrets = data.Secrets
	if dep.previousRootSecret != nil {
		if data.Previous.Secrets, err = derive(dep.previousRootSecret, dep.previousSecrets); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// countActivation enforces MaxActivations and persists the new count,
// against the count stored by every Coordinator sharing the store.
func (c *Core) countActivation(ctx context.Context, dep *deployment, marbleType string, limit uint) error {
	return c.write(ctx, "counting the activation", func() error {
		if v := c.view.Load(); v.state != StateAcceptingMarbles || !v.dep.sameActivationBasis(dep) {
			return newError(KindFailedPrecondition, nil, "the manifest changed during activation; try again")
		}
		n := c.activations[marbleType]
		if n >= uint64(limit) {
			return newError(KindResourceExhausted, nil, "marble type %q reached its limit of %d activations", marbleType, limit)
		}
		key := prefixActivations + marbleType
		if err := c.commit(ctx, map[string][]byte{key: []byte(strconv.FormatUint(n+1, 10))}); err != nil {
			return fmt.Errorf("storing activation count: %w", err)
		}
		c.activations[marbleType] = n + 1
		return nil
	})
}

// sameActivationBasis reports whether an activation prepared with prepared
// is still valid when cur is the deployment: the same manifest (with its
// package updates), CA and root secrets. A write of user-defined secrets
// replaces the deployment but keeps all of these, so an activation that
// rendered the previous values stays valid: it is the activation that ran
// just before the write. They are compared by content, since the same
// deployment read again from the store (after a write of another
// Coordinator) is a new object.
func (cur *deployment) sameActivationBasis(prepared *deployment) bool {
	if cur == prepared {
		return true
	}
	return (cur.manifest == prepared.manifest ||
		bytes.Equal(cur.manifestRaw, prepared.manifestRaw) && maps.Equal(cur.packageSVN, prepared.packageSVN)) &&
		cur.root.Cert.Equal(prepared.root.Cert) &&
		cur.intermediate.Cert.Equal(prepared.intermediate.Cert) &&
		cur.marbleRoot.Equal(prepared.marbleRoot) &&
		bytes.Equal(cur.rootSecret, prepared.rootSecret) &&
		bytes.Equal(cur.previousRootSecret, prepared.previousRootSecret)
}

// verifyEvidence checks the marble's evidence, its binding to the TLS
// certificate and the package's policy.
func (c *Core) verifyEvidence(ctx context.Context, req ActivationRequest, pkgName string, pkg manifest.Package) error {
	claims, err := c.cfg.Verifier.Verify(ctx, req.Quote)
	if errors.Is(err, attestation.ErrUnavailable) {
		return newError(KindUnavailable, err, "the evidence cannot be verified right now; retry later")
	}
	if err != nil {
		return newError(KindPermissionDenied, err, "invalid evidence")
	}
	if want := attestation.BindHash(req.PeerCert.Raw); claims.ReportData != want {
		return newError(KindPermissionDenied, nil, "the evidence does not bind the presented TLS certificate: ReportData: expected %x (SHA-256 of the certificate, then zeros), found %x", want, claims.ReportData)
	}
	if err := checkPackage(pkg, claims); err != nil {
		return newError(KindPermissionDenied, err, "the enclave does not match package %q", pkgName)
	}
	return nil
}

// checkPackage compares verified claims with a manifest package's policy.
// A package describes one build: Debug: true matches only a debug enclave.
func checkPackage(pkg manifest.Package, claims *attestation.Claims) error {
	debug := attestation.DebugRefused
	if pkg.Debug {
		debug = attestation.DebugRequired
	}
	policy, err := attestation.NewPolicy(debug, pkg.UniqueID, pkg.SignerID, pkg.ProductID, pkg.SecurityVersion, pkg.AcceptedTCBStatuses, pkg.AcceptedAdvisories)
	if err != nil {
		return err
	}
	return policy.Check(claims)
}
