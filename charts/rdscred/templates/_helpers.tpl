{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "rdscred.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "rdscred.fullname" -}}
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

{{- define "rdscred.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rdscred.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rdscred.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rdscred.labels" -}}
helm.sh/chart: {{ include "rdscred.chart" . }}
{{ include "rdscred.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: rdscred
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rdscred.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rdscred.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rdscred.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Rules on the namespaced objects the controller works with, shared by the ClusterRole
(all namespaces) and the per-namespace Roles. Exactly what the code uses (the test suite fails
on any verb listed here that no test exercised, and on any 403):
- RdsCredentials: list/watch (the controller's informer, which triggers reconciles), get (each
  reconcile decides from a quorum read, never the possibly stale cache) and patch (the
  finalizer helper's JSON patches); status: patch (merge patch of the whole status, guarded by
  the resourceVersion that read returned).
- Secrets: list/watch (owned Secrets, label-selected), get (fresh read before every write),
  create, patch (merge patch of data/labels/annotations). Never update or delete: owned
  Secrets go with their RdsCredential by garbage collection (ownerReference).
- events.k8s.io Events: create, and patch when the recorder folds a repeat into a series
  (kube-runtime's Recorder writes events.k8s.io/v1 only, never core/v1 events).
- Workloads: list (discovery of the readers of a Secret), get (fresh read before a rollout
  decision), patch (the pod-template restart annotation).
- CronJobs (workloads.cronJobs.enabled): the same on batch cronjobs (patch: the job template's
  annotations), and get on jobs (a CronJob's running Jobs, which the alternating-users wait
  waits for). Argo Rollouts (workloads.argoRollouts.enabled): the same on argoproj.io
  rollouts (patch: spec.restartAt and the Rollout's annotations). Neither is granted when
  disabled, and the controller then never requests them. */}}
{{- define "rdscred.namespacedRules" -}}
- apiGroups: ["rdscred.io"]
  resources: ["rdscredentials"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["rdscred.io"]
  resources: ["rdscredentials/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "patch"]
{{- if .Values.workloads.cronJobs.enabled }}
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get"]
{{- end }}
{{- if .Values.workloads.argoRollouts.enabled }}
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["get", "list", "patch"]
{{- end }}
{{- end }}

{{/* Rules on the cluster-scoped RdsDatabase kind: get (fresh read of a credential's
database), list/watch (informers), status patch. No finalizer, no writes to the spec. */}}
{{- define "rdscred.databaseRules" -}}
- apiGroups: ["rdscred.io"]
  resources: ["rdsdatabases"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["rdscred.io"]
  resources: ["rdsdatabases/status"]
  verbs: ["patch"]
{{- end }}

{{/* Whether the cluster serves a kind (`helm template` knows only built-in kinds unless
given --api-versions). */}}
{{- define "rdscred.served" -}}
{{- if .root.Capabilities.APIVersions.Has .kind }}true{{ end }}
{{- end }}

{{/* Guard rails that a JSON schema cannot express well. */}}
{{- define "rdscred.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 requires leaderElection.enabled=true: two active controllers would both act on every credential" }}
{{- end }}
{{- if and (gt (int .Values.shards) 1) (not .Values.leaderElection.enabled) }}
{{- fail "shards > 1 requires leaderElection.enabled=true: the shards are guarded by Leases" }}
{{- end }}
{{- if and (gt (int .Values.shards) 1) .Values.events.queueUrl }}
{{- fail "shards > 1 cannot be combined with events.queueUrl yet: each shard's consumer would delete the messages about the other shards' secrets (docs/sharding.md)" }}
{{- end }}
{{- end }}

{{/* The Lease names the controller uses: the leader Lease, plus one per shard when sharded
(the leader Lease is then only read: no shard runs while an unsharded leader holds it). */}}
{{- define "rdscred.leaseNames" -}}
{{- .Values.leaderElection.leaseName | quote }}
{{- if gt (int .Values.shards) 1 }}
{{- range $k := until (int .Values.shards) }}, {{ printf "%s-shard-%d" $.Values.leaderElection.leaseName $k | quote }}{{ end }}
{{- end }}
{{- end }}
