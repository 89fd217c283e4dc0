{{/* Chart name, overridable. */}}
{{- define "rlscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects. A release named like the chart is not
repeated ("rlscale", not "rlscale-rlscale").
*/}}
{{- define "rlscale.fullname" -}}
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

{{- define "rlscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "rlscale.labels" -}}
helm.sh/chart: {{ include "rlscale.chart" . }}
{{ include "rlscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: rlscale
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels the Deployment selects its pods by (immutable after install: keep them few). */}}
{{- define "rlscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rlscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rlscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rlscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: a digest pins it, else the tag (default: appVersion). */}}
{{- define "rlscale.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The directory of the built-in model inside the operator image: rlscale.policy.model.DEFAULT_MODEL_PATH
(models/default.onnx next to the installed rlscale/policy package) under the image's Python 3.11
site-packages. A ConfigMap model is mounted over this directory as default.onnx, so every policy
with spec.model.source "builtin" runs it. tests/install checks this path against the Dockerfile.
*/}}
{{- define "rlscale.builtinModelDir" -}}/usr/local/lib/python3.11/site-packages/rlscale/policy/models{{- end }}

{{/*
Cross-field checks the JSON schema cannot express with a clear message. They fail the
render with the offending value named.
*/}}
{{- define "rlscale.validate" -}}
{{- if and (eq .Values.model.source "configMap") (not .Values.model.configMap.name) }}
{{- fail "model.configMap.name: required when model.source is configMap" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) .Values.peering.enabled }}
{{- fail "replicaCount: more than 1 replica shares the policies between them; peering.enabled would make one replica do all the work (set peering.enabled=false)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled: needs metrics.service.enabled=true (the ServiceMonitor selects that Service)" }}
{{- end }}
{{- end }}
