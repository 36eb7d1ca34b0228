// Package samples holds two sample marbles and the manifest that connects
// them; see README.md. The package itself only carries the tests that run
// the samples against a real Coordinator.
package samples
