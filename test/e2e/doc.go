// Package e2e holds the end-to-end test of the mission's core flow: the
// Kubernetes seeds happening for real on a local control plane, with a node
// agent (test/kubetest/nodeagent) running the Pods' containers.
package e2e
