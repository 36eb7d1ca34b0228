package nodeagent

import corev1 "k8s.io/api/core/v1"

// PodReady reports whether the Pod's Ready condition is True, as the agent
// reports it once every container passes its readiness probe.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
