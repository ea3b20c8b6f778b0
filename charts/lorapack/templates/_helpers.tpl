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
Where the operator works (JSON lists; README.md, "RBAC"). Namespaced (clusterWide false):
  pools  = poolNamespaces; empty: the deprecated watchNamespaces if set, else the release namespace
  teams  = teamNamespaces, plus the deprecated watchNamespaces that are not pool namespaces
  served = pools + teams (LORAPACK_NAMESPACES, the RoleBindings and the KopfPeerings)
Cluster-wide: pools = poolNamespaces (empty: every namespace), teams and served empty (all).
*/}}
{{- define "lorapack.poolNamespaces" -}}
{{- if .Values.poolNamespaces -}}
{{- toJson .Values.poolNamespaces -}}
{{- else if .Values.clusterWide -}}
{{- toJson list -}}
{{- else if .Values.watchNamespaces -}}
{{- toJson .Values.watchNamespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "lorapack.teamNamespaces" -}}
{{- $pools := include "lorapack.poolNamespaces" . | fromJsonArray -}}
{{- $teams := list -}}
{{- range (concat .Values.teamNamespaces .Values.watchNamespaces) -}}
{{- if and (not (has . $pools)) (not (has . $teams)) -}}
{{- $teams = append $teams . -}}
{{- end -}}
{{- end -}}
{{- toJson $teams -}}
{{- end -}}

{{- define "lorapack.servedNamespaces" -}}
{{- if .Values.clusterWide -}}
{{- toJson list -}}
{{- else -}}
{{- toJson (concat (include "lorapack.poolNamespaces" . | fromJsonArray) (include "lorapack.teamNamespaces" . | fromJsonArray)) -}}
{{- end -}}
{{- end -}}

{{/*
Cross-field checks the JSON schema cannot express; each message names the values and the fix.
*/}}
{{- define "lorapack.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail (printf "replicaCount is %d but peering.enabled is false: two unpeered operators would both reconcile every pool. Set peering.enabled=true or replicaCount=1" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and .Values.clusterWide (or .Values.teamNamespaces .Values.watchNamespaces) -}}
{{- fail (printf "clusterWide is true but teamNamespaces %v / watchNamespaces %v name namespaces: a cluster-wide operator serves every namespace. Set clusterWide=false to serve only the namespaces you list, or remove the lists" .Values.teamNamespaces .Values.watchNamespaces) -}}
{{- end -}}
{{- if .Values.watchNamespaces -}}
{{- range .Values.poolNamespaces -}}
{{- if not (has . $.Values.watchNamespaces) -}}
{{- fail (printf "poolNamespaces contains %q, which is not in watchNamespaces %v: the operator would never see pools there. Add it to watchNamespaces or remove it from poolNamespaces (better: replace watchNamespaces by teamNamespaces)" . $.Values.watchNamespaces) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name, $list := dict "watchNamespaces" .Values.watchNamespaces "poolNamespaces" .Values.poolNamespaces "teamNamespaces" .Values.teamNamespaces "credentialsSecrets" .Values.credentialsSecrets -}}
{{- if ne (len $list) (len (uniq $list)) -}}
{{- fail (printf "%s %v lists a name twice: list each once" $name $list) -}}
{{- end -}}
{{- end -}}
{{- range .Values.teamNamespaces -}}
{{- if has . $.Values.poolNamespaces -}}
{{- fail (printf "%q is in both poolNamespaces and teamNamespaces: pool namespaces serve adapters too, so list it only in poolNamespaces" .) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.probes.port)) -}}
{{- fail (printf "metrics.port and probes.port are both %d: give the metrics server and the liveness endpoint different ports" (int .Values.probes.port)) -}}
{{- end -}}
{{- end -}}

{{/* A label map as key=value pairs separated by commas, sorted by key (LORAPACK_GATEWAY_NAMESPACES). */}}
{{- define "lorapack.labelList" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
