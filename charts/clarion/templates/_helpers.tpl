{{/* The chart name, cut at 63 characters (a DNS label). */}}
{{- define "clarion.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every resource: release-chart, or the release name alone when it already
holds the chart name; cut at 63 characters because some Kubernetes name fields are DNS labels.
*/}}
{{- define "clarion.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A name derived from the full name with a suffix, still at most 63 characters. */}}
{{- define "clarion.suffixed" -}}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "clarion.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "clarion.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (Kubernetes recommended labels plus helm.sh/chart). */}}
{{- define "clarion.labels" -}}
helm.sh/chart: {{ include "clarion.chart" . }}
{{ include "clarion.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clarion
{{- end }}

{{/*
The standard labels without app.kubernetes.io/component, for objects that are not the
operator (the helm test Pod adds its own component; a key written twice in one mapping is
rejected by YAML linters and resolved differently by different parsers).
*/}}
{{- define "clarion.labelsWithoutComponent" -}}
helm.sh/chart: {{ include "clarion.chart" . }}
app.kubernetes.io/name: {{ include "clarion.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clarion
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "clarion.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clarion.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "clarion.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clarion.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "clarion.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "clarion.peeringName" -}}
{{- default (include "clarion.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The watched namespaces as a list: the release namespace when none is given. */}}
{{- define "clarion.watchedNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toYaml (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toYaml (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
The operator's permissions, shared by the namespaced Role and the ClusterRole: exactly the
resources and verbs the operator calls (operator/clarion_operator/kube.py and kopf).
Server-side apply of a child that does not exist yet is a create, hence create + patch.
*/}}
{{- define "clarion.rules" -}}
# kopf: watch the channels, patch finalizers and progress annotations; the reconciler lists
# channels to resolve topic claims.
- apiGroups: ["realtime.clarion.dev"]
  resources: ["realtimechannels"]
  verbs: ["get", "list", "watch", "patch"]
# Conditions, topics and workers are written through the status subresource.
- apiGroups: ["realtime.clarion.dev"]
  resources: ["realtimechannels/status"]
  verbs: ["patch"]
# Events on condition transitions and Kafka actions.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The worker children: server-side apply, read back, delete when switched off.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "create", "patch", "delete"]
# list/watch: Ready follows the worker Deployments and Pods (a failing pod's message).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "create", "patch", "delete"]
# spec.exposure type gateway: the HTTPRoute; its parent Gateway is only read, to say in
# the Exposed condition whether it exists.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways"]
  verbs: ["get"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
{{- if .Values.rbac.kafkaSecrets }}
# The Secrets named by spec.kafka.security (SASL credentials, TLS material): read and,
# with rbac.watchSecrets, watched so that a changed Secret reconciles its channels at once.
- apiGroups: [""]
  resources: ["secrets"]
  {{- if .Values.rbac.watchSecrets }}
  verbs: ["get", "list", "watch"]
  {{- else }}
  verbs: ["get"]
  {{- end }}
{{- end }}
{{- end }}
