// Package install deploys MarbleRun to a Kubernetes cluster and checks on
// it: the Helm release of the marblerun chart (embedded in the binary, see
// package charts), the webhook certificates of the marble-injector, the
// detection of the cluster's SGX device plugin, and the readiness of the
// control plane's Deployments.
//
// # Objects
//
// The release is always named "marblerun" and lives in the installation's
// namespace. Besides the chart's objects, an installation without
// cert-manager creates two Secrets in that namespace:
//
//   - marble-injector-webhook-ca: a CA (ECDSA P-256) made by the
//     installation, kept so that the webhook's certificate can be reissued;
//   - marble-injector-webhook-certs: the webhook's serving certificate for
//     marble-injector.<ns>.svc, signed by that CA; the CA certificate is the
//     webhook configuration's caBundle.
//
// When the cluster serves the cert-manager.io/v1 API, the chart's Issuer
// and Certificate make marble-injector-webhook-certs instead, and
// cert-manager's CA injector fills in the caBundle. The kubelet-serving
// signer of the cluster is never used.
//
// Uninstall removes the release and both Secrets; the namespace stays.
package install
