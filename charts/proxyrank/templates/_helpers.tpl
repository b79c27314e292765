{{/* Names and labels shared by every template. */}}

{{- define "proxyrank.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: "proxyrank" for the release "proxyrank", "<release>-proxyrank" otherwise. */}}
{{- define "proxyrank.fullname" -}}
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

{{- define "proxyrank.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proxyrank.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proxyrank.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "proxyrank.labels" -}}
helm.sh/chart: {{ include "proxyrank.chart" . }}
{{ include "proxyrank.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: proxyrank
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "proxyrank.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "proxyrank.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: [registry/]repository then @digest, or :tag (the appVersion by default).
global.imageRegistry replaces image.registry. */}}
{{- define "proxyrank.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry }}
{{- $repository := .Values.image.repository }}
{{- if $registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The rule sets of operator/proxyrank/rbac.py, generated into files/rbac-rules.yaml. */}}
{{- define "proxyrank.rbacRules" -}}
{{- .Files.Get "files/rbac-rules.yaml" }}
{{- end }}

{{/* Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the namespace: releases in several namespaces. */}}
{{- define "proxyrank.clusterName" -}}
{{- printf "%s-%s" (include "proxyrank.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The admin policy file (operator/proxyrank/policy.py AdminPolicy) from the trainerPolicy values. */}}
{{- define "proxyrank.trainerPolicy" -}}
{{- $p := .Values.trainerPolicy -}}
{{- $policy := dict
  "defaultImage" ($p.defaultImage | default (printf "ghcr.io/example/proxyrank-trainer:%s" .Chart.AppVersion))
  "allowedImages" $p.allowedImages
  "allowedServiceAccounts" $p.allowedServiceAccounts
  "allowedVolumeTypes" $p.allowedVolumeTypes
  "maxGPUsPerRun" $p.maxGPUsPerRun
  "maxRunsPerComparison" $p.maxRunsPerComparison
  "scheduling" (dict
    "queue" ($p.scheduling.queue | default nil)
    "priorityClassName" ($p.scheduling.priorityClassName | default nil)
    "tolerations" $p.scheduling.tolerations) -}}
{{- toYaml $policy }}
{{- end }}
