{{/*
Names, labels and the checks shared by every template of the lorapack chart.
*/}}

{{- define "lorapack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorapack.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lorapack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable for the life of a release (a Deployment's selector is immutable). */}}
{{- define "lorapack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lorapack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lorapack.labels" -}}
helm.sh/chart: {{ include "lorapack.chart" . }}
{{ include "lorapack.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lorapack
{{- end -}}

{{- define "lorapack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lorapack.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name the ServiceAccount the operator runs as" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lorapack.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "lorapack.agentImage" -}}
{{- default (include "lorapack.image" .) .Values.agent.image -}}
{{- end -}}

{{/*
Namespaces that hold BaseModelPools (JSON list): poolNamespaces, else every watched namespace.
Only meaningful when watchNamespaces or poolNamespaces is set.
*/}}
{{- define "lorapack.poolNamespaces" -}}
{{- if .Values.poolNamespaces -}}
{{- toJson .Values.poolNamespaces -}}
{{- else -}}
{{- toJson .Values.watchNamespaces -}}
{{- end -}}
{{- end -}}

{{/*
Cross-field checks the JSON schema cannot express; each message names the values and the fix.
*/}}
{{- define "lorapack.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail (printf "replicaCount is %d but peering.enabled is false: two unpeered operators would both reconcile every pool. Set peering.enabled=true or replicaCount=1" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if .Values.watchNamespaces -}}
{{- range .Values.poolNamespaces -}}
{{- if not (has . $.Values.watchNamespaces) -}}
{{- fail (printf "poolNamespaces contains %q, which is not in watchNamespaces %v: the operator would never see pools there. Add it to watchNamespaces or remove it from poolNamespaces" . $.Values.watchNamespaces) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) -}}
{{- fail (printf "watchNamespaces %v lists a namespace twice: list each namespace once" .Values.watchNamespaces) -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.probes.port)) -}}
{{- fail (printf "metrics.port and probes.port are both %d: give the metrics server and the liveness endpoint different ports" (int .Values.probes.port)) -}}
{{- end -}}
{{- end -}}
