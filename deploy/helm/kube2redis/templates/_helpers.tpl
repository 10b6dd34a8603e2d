{{- define "kube2redis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kube2redis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "kube2redis.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "kube2redis.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kube2redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube2redis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube2redis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kube2redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kube2redis
{{- end }}

{{- define "kube2redis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube2redis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kube2redis.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "kube2redis.redisUrl" -}}
{{- if .Values.redis.bundled.enabled }}
{{- printf "redis://%s-redis:6379/0" (include "kube2redis.fullname" .) }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{- define "kube2redis.passwordSecret" -}}
{{- default (printf "%s-redis" (include "kube2redis.fullname" .)) .Values.redis.existingSecret }}
{{- end }}

{{- /*
One RBAC rule per configured resource, parsed as common/resources.py parses
--resource: plural[.version].group[?selectors], or version/plural for the core group.
*/}}
{{- define "kube2redis.resourceRules" -}}
{{- range .Values.resources }}
{{- $raw := first (splitList "?" .) }}
{{- if contains "/" $raw }}
{{- $raw = last (splitList "/" $raw) }}
{{- end }}
{{- $parts := splitn "." 2 $raw }}
{{- $group := $parts._1 | default "" }}
{{- if regexMatch "^v[0-9][^.]*\\..+" $group }}
{{- $group = (splitn "." 2 $group)._1 }}
{{- end }}
- apiGroups: [{{ $group | quote }}]
  resources: [{{ $parts._0 | quote }}]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}

{{- /* The settings both containers (and verify) read, from one ConfigMap and one Secret. */}}
{{- define "kube2redis.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "kube2redis.fullname" . }}
env:
  - name: KUBE2REDIS_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "kube2redis.passwordSecret" . }}
        key: {{ .Values.redis.passwordKey }}
        optional: {{ empty .Values.redis.existingSecret }}
{{- end }}

{{- define "kube2redis.caMount" -}}
{{- if .Values.redis.tls.caSecret }}
- name: redis-ca
  mountPath: /etc/kube2redis/redis-ca
  readOnly: true
{{- end }}
{{- end }}
