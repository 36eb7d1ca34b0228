// Package nodeagent stands in for the kubelet and kube-proxy of one node in
// tests against a real API server (see test/kubetest): it registers a
// Node, runs the containers of the Pods bound to it as local processes, and
// makes Services reachable.
//
// Each Pod gets its own network namespace, so its containers share
// localhost and may listen on any port without meeting other Pods or the
// machine. Each container runs in its own mount namespace with a root file
// system built in a tmpfs from its image (a table of local binaries, see
// Image) and its volumes mounted at their mountPaths (emptyDir, Secret,
// ConfigMap, downward API, projected incl. service-account tokens, and
// PersistentVolumeClaims, which the agent provisions; volumes whose Secret,
// ConfigMap or claim is not there yet are retried). It runs as the
// Pod's user, with a read-only root when the spec asks, and with the Pod's
// env resolved as the kubelet does (fieldRef, secretKeyRef,
// configMapKeyRef, envFrom, $(VAR) expansion).
//
// Services must get cluster IPs from a loopback range (start the API
// server with kubetest.WithServiceCIDR("127.20.0.0/16")): the agent
// listens on every cluster IP and port, in the machine's network namespace
// and in every Pod's, and forwards each connection to a Ready Pod selected
// by the Service. So the API server reaches webhooks through their
// Services, tests reach a Service at its cluster IP, and Pods reach one by
// name: /etc/hosts in every container maps `name`, `name.ns`, `name.ns.svc`
// and `name.ns.svc.<cluster domain>` to the cluster IP. Pod IPs are
// reported but not routable. Given the API server's address
// (Config.APIServer), the agent forwards the `kubernetes` Service there and
// sets KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT in every
// container, so that in-cluster clients work with the service-account
// token, CA and namespace the Pod mounts. Inside a Pod, Services are not served on the
// port numbers its containers declare (the agent's socket would keep the
// container from listening there; kube-proxy rewrites packets instead).
//
// Probes (httpGet, tcpSocket) wait their initialDelaySeconds, then run every
// ProbeInterval rather than at their declared periods, so tests need not
// wait for production timings; a startup probe gates readiness; liveness
// probes are not enforced.
// Containers restart per the Pod's restartPolicy with a short backoff.
//
// The agent needs root (namespaces, mounts, switching users) and Linux.
package nodeagent
