{{/* Labels of every object of a component; call with (dict "ctx" $ "component" "coordinator"). */}}
{{- define "marblerun.labels" -}}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/created-by: {{ .ctx.Values.global.createdBy }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/part-of: marblerun
helm.sh/chart: {{ .ctx.Chart.Name }}-{{ .ctx.Chart.Version }}
{{- end -}}

{{/* Labels that select the Coordinator's Pods. */}}
{{- define "marblerun.coordinatorSelector" -}}
{{ .Values.global.coordinatorComponentLabel }}: coordinator
{{ .Values.global.coordinatorNamespaceLabel }}: {{ .Release.Namespace }}
{{- end -}}

{{/* Labels that select the marble-injector's Pods. */}}
{{- define "marblerun.injectorSelector" -}}
app.kubernetes.io/name: marble-injector
app.kubernetes.io/part-of: marblerun
{{- end -}}

{{/* Port of the key API, on which Coordinators in distributed mode hand
the key-encryption key to each other. */}}
{{- define "marblerun.keyAPIPort" -}}
5433
{{- end -}}

{{/* DNS names of the Coordinator's certificate, comma-separated; in
distributed mode the key API Service's names too. */}}
{{- define "marblerun.dnsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list -}}
{{- range splitList "," (toString .Values.coordinator.hostname) -}}
{{- $n := trim . -}}
{{- if and $n (not (has $n $names)) -}}
{{- $names = append $names $n -}}
{{- end -}}
{{- end -}}
{{- $fixed := list "localhost" "coordinator-mesh-api" "coordinator-client-api" (printf "coordinator-mesh-api.%s" $ns) (printf "coordinator-client-api.%s" $ns) (printf "coordinator-mesh-api.%s.svc.cluster.local" $ns) (printf "coordinator-client-api.%s.svc.cluster.local" $ns) -}}
{{- if .Values.coordinator.distributedDeployment -}}
{{- $key := .Values.coordinator.keyAPIName -}}
{{- $fixed = concat $fixed (list $key (printf "%s.%s" $key $ns) (printf "%s.%s.svc.cluster.local" $key $ns)) -}}
{{- end -}}
{{- range $fixed -}}
{{- if not (has . $names) -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* Restricted security context of a container. */}}
{{- define "marblerun.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
