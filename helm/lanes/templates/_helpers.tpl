{{/*
Names, labels and the small pieces every template shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "lanes.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else <release>-<chart> (just <release>
when it already contains the chart name). Kept short enough for "-coordinator" and friends.
*/}}
{{- define "lanes.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "lanes.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. Call with (dict "ctx" $ "component" "coordinator"). */}}
{{- define "lanes.labels" -}}
helm.sh/chart: {{ include "lanes.chart" .ctx }}
{{ include "lanes.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: lanes
{{- end }}

{{/* Selector labels: name, instance and component. Same call as lanes.labels. */}}
{{- define "lanes.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lanes.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* <registry>/<repository>:<tag>. Call with (dict "ctx" $ "image" .Values.coordinator.image). */}}
{{- define "lanes.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion }}
{{- if .ctx.Values.image.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" .ctx.Values.image.registry) .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "lanes.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lanes.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret and key holding DATABASE_URL. */}}
{{- define "lanes.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "lanes.fullname" .) }}
{{- end }}
{{- end }}

{{- define "lanes.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey | default "DATABASE_URL" }}
{{- else -}}
DATABASE_URL
{{- end }}
{{- end }}

{{/* Key of the direct (pooler-less) URL in the database Secret; empty: none. */}}
{{- define "lanes.databaseDirectKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretDirectKey }}
{{- else if .Values.database.directUrl -}}
LANES_LISTEN_DATABASE_URL
{{- end }}
{{- end }}

{{/* Secret holding the tokens and API keys. */}}
{{- define "lanes.authSecretName" -}}
{{- default (printf "%s-auth" (include "lanes.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "lanes.eventsSecretName" -}}
{{- default (printf "%s-events" (include "lanes.fullname" .)) .Values.events.existingSecret }}
{{- end }}

{{/* An env entry read from the auth Secret. Call with (dict "ctx" $ "key" "LANES_TOKEN"). */}}
{{- define "lanes.authEnv" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "lanes.authSecretName" .ctx }}
      key: {{ .key }}
{{- end }}

{{/* The coordinator's Service name and the URL the agents and the gateway dial. */}}
{{- define "lanes.coordinatorService" -}}
{{- printf "%s-coordinator" (include "lanes.fullname" .) }}
{{- end }}

{{- define "lanes.coordinatorUrl" -}}
{{- $scheme := ternary "https" "http" .Values.coordinator.tls.enabled }}
{{- printf "%s://%s.%s.svc:%d" $scheme (include "lanes.coordinatorService" .) .Release.Namespace (int .Values.coordinator.port) }}
{{- end }}

{{/* Environment every Lanes container shares. */}}
{{- define "lanes.commonEnv" -}}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.rustLog | quote }}
{{- end }}

{{/* Volume and mount of the coordinator's TLS Secret (ca.crt for clients). */}}
{{- define "lanes.tlsVolume" -}}
- name: coordinator-tls
  secret:
    secretName: {{ required "coordinator.tls.secretName is required with coordinator.tls.enabled" .Values.coordinator.tls.secretName }}
{{- end }}

{{- define "lanes.tlsMount" -}}
- name: coordinator-tls
  mountPath: /etc/lanes/tls
  readOnly: true
{{- end }}

{{/*
Refuses values that would deploy something broken: a token the coordinator would reject.
Rendered (as nothing) by the auth Secret.
*/}}
{{- define "lanes.validateAuth" -}}
{{- $a := .Values.auth }}
{{- if not $a.existingSecret }}
{{- $agentTokens := list }}
{{- range splitList "," $a.agentTokens }}{{- if trim . }}{{- $agentTokens = append $agentTokens (trim .) }}{{- end }}{{- end }}
{{- $callerTokens := list }}
{{- range splitList "," (printf "%s,%s" $a.adminTokens $a.clientTokens) }}{{- if trim . }}{{- $callerTokens = append $callerTokens (trim .) }}{{- end }}{{- end }}
{{- if and $agentTokens (not (has (trim $a.agentToken) $agentTokens)) }}
{{- fail "auth.agentToken must be one of auth.agentTokens: the coordinator would refuse the agents" }}
{{- end }}
{{- if and $callerTokens (not (has (trim $a.gatewayToken) $callerTokens)) }}
{{- fail "auth.gatewayToken must be one of auth.adminTokens (or auth.clientTokens): the coordinator would refuse the gateway" }}
{{- end }}
{{- end }}
{{- end }}
