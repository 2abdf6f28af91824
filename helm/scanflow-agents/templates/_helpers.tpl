{{/* The release's full name, at most 63 characters (a label value). */}}
{{- define "scanflow-agents.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "scanflow-agents.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one agent's pods; call with (dict "root" $ "name" $name). */}}
{{- define "scanflow-agents.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: agent
scanflow.io/agent: {{ .name }}
{{- end -}}

{{/* The object name of one agent (Deployment, PDB): <fullname>-<agent>. */}}
{{- define "scanflow-agents.agentName" -}}
{{- printf "%s-%s" (include "scanflow-agents.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scanflow-agents.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scanflow-agents.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The chart's image, repository:tag. */}}
{{/*
An image reference from {repository, tag, digest}: by digest when one is given
(the content is pinned, whatever the tag names later), else by tag, the chart's
appVersion by default. Call with (dict "image" $image "root" $).
*/}}
{{- define "scanflow-agents.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The agents' image (the Containerfile's `agent` target). */}}
{{- define "scanflow-agents.image" -}}
{{- include "scanflow-agents.imageRef" (dict "image" .Values.image "root" .) -}}
{{- end -}}

{{/* One agent's values over agentDefaults; call with (dict "root" $ "agent" $agent). */}}
{{- define "scanflow-agents.agentValues" -}}
{{- $merged := mergeOverwrite (deepCopy .root.Values.agentDefaults) (deepCopy .agent) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* Whether any enabled agent talks to the Kubernetes API. */}}
{{- define "scanflow-agents.usesKubernetesApi" -}}
{{- range $name, $agent := .Values.agents -}}
{{- if and $agent.enabled $agent.kubernetesApi -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the planner supervises: prefix + team. */}}
{{- define "scanflow-agents.supervisedNamespaces" -}}
{{- $prefix := .Values.kubernetes.namespacePrefix -}}
{{- range .Values.kubernetes.teams }}
- {{ printf "%s%s" $prefix . }}
{{- end -}}
{{- end -}}

{{/*
A URL list (comma-separated) with each short Service name made fully qualified
by the release namespace: the chart's pods resolve `nats` in the release
namespace, but the planner hands the same URL to pods in team namespaces,
which would look for `nats` in their own. Call with (dict "url" URL "namespace" NS).
*/}}
{{- define "scanflow-agents.qualifiedUrls" -}}
{{- $namespace := .namespace -}}
{{- $urls := list -}}
{{- range splitList "," .url -}}
{{- $url := trim . -}}
{{- if and (not (contains "@" $url)) (not (regexMatch "://localhost([:/]|$)" $url)) -}}
{{- $url = regexReplaceAll "^([A-Za-z]+://)([a-z0-9-]+)((:[0-9]+)?(/.*)?)$" $url (printf "${1}${2}.%s.svc${3}" $namespace) -}}
{{- end -}}
{{- $urls = append $urls $url -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{/*
The settings file every agent reads (scanflow --settings): the values'
`settings` tree under what the chart sets. Agent configurations are keyed by
agent name; the planner on Kubernetes is told its images, namespaces and
credentials Secret, and the application file if there is one.
*/}}
{{- define "scanflow-agents.settings" -}}
{{- $root := . -}}
{{- $agents := dict -}}
{{- range $name, $agent := .Values.agents -}}
{{- if $agent.enabled -}}
{{- $config := deepCopy (default (dict) $agent.config) -}}
{{- if and (eq $name "planner") (eq (default "local" $config.platform) "kubernetes") -}}
{{- $image := include "scanflow-agents.image" $root -}}
{{- $images := $root.Values.kubernetes.images -}}
{{- $serving := include "scanflow-agents.imageRef" (dict "image" $images.serving "root" $root) -}}
{{- $executor := include "scanflow-agents.imageRef" (dict "image" $images.executor "root" $root) -}}
{{- $base := include "scanflow-agents.imageRef" (dict "image" $images.base "root" $root) -}}
{{- $teams := $root.Values.kubernetes.teams -}}
{{- $platform := dict "namespace_prefix" $root.Values.kubernetes.namespacePrefix "teams" $teams "team" (first $teams) "agent_image" $image "serving_image" $serving "executor_image" $executor "base_image" $base "argo" $root.Values.kubernetes.argo "argo_executor_service_account" $root.Values.kubernetes.argoExecutorServiceAccount -}}
{{- if $root.Values.envFromSecret -}}
{{- $_ := set $platform "env_secret" $root.Values.envFromSecret -}}
{{- end -}}
{{- with include "scanflow-agents.podEnv" $root | fromYamlArray -}}
{{- $_ := set $platform "pod_env" . -}}
{{- end -}}
{{- if $root.Values.imagePullSecrets -}}
{{- $_ := set $platform "image_pull_secrets" $root.Values.imagePullSecrets -}}
{{- end -}}
{{- with $root.Values.kubernetes.registry -}}
{{- $_ := set $platform "registry" . -}}
{{- $_ := set $platform "build_namespace" $root.Values.kubernetes.buildNamespace -}}
{{- end -}}
{{- with $root.Values.kubernetes.registrySecret -}}
{{- $_ := set $platform "registry_secret" . -}}
{{- end -}}
{{- $_ := set $config "kubernetes" (mergeOverwrite $platform (default (dict) $config.kubernetes)) -}}
{{- end -}}
{{- if and (eq $name "planner") $root.Values.application -}}
{{- $_ := set $config "applications" (list "/etc/scanflow/applications/application.yaml") -}}
{{- end -}}
{{- $_ := set $agents $name $config -}}
{{- end -}}
{{- end -}}
{{- $ns := .Release.Namespace -}}
{{- $mlflow := dict "tracking_uri" (include "scanflow-agents.qualifiedUrls" (dict "url" .Values.mlflow.trackingUri "namespace" $ns)) -}}
{{- if .Values.mlflow.registryUri -}}
{{- $_ := set $mlflow "registry_uri" (include "scanflow-agents.qualifiedUrls" (dict "url" .Values.mlflow.registryUri "namespace" $ns)) -}}
{{- end -}}
{{- $natsUrl := include "scanflow-agents.qualifiedUrls" (dict "url" .Values.nats.url "namespace" $ns) -}}
{{- $ours := dict "namespace" .Values.namespace "nats" (dict "url" $natsUrl "replicas" (int (.Values.nats.replicas | default 1))) "mlflow" $mlflow "http" (dict "port" (int .Values.httpPort)) "agent" (dict "shutdown_timeout" .Values.shutdownTimeout) "agents" $agents -}}
{{- toYaml (mergeOverwrite (deepCopy .Values.settings) $ours) -}}
{{- end -}}

{{/*
The credentials of the pods the planner makes (model servers, steps, agents),
as the platform's pod_env: the agents' NATS user (under natsAuthorization,
natsAuthorization.servingUser) and MLflow credentials, from Secrets of the same
names in each team namespace. MLflow's own variables too: model servers and
steps use the MLflow client directly.
*/}}
{{- define "scanflow-agents.podEnv" -}}
{{- $auth := .Values.natsAuthorization -}}
{{- $nats := .Values.nats.existingSecret -}}
{{- if $auth.enabled }}
- {name: SCANFLOW_NATS__USER, value: {{ $auth.servingUser | quote }}}
- {name: SCANFLOW_NATS__PASSWORD, secret: {{ $auth.existingSecret | quote }}, key: {{ $auth.servingUser | quote }}}
{{- else if $nats.name }}
{{- range $key, $var := dict "userKey" "SCANFLOW_NATS__USER" "passwordKey" "SCANFLOW_NATS__PASSWORD" "tokenKey" "SCANFLOW_NATS__TOKEN" }}
{{- with index $nats $key }}
- {name: {{ $var }}, secret: {{ $nats.name | quote }}, key: {{ . | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- $mlflow := .Values.mlflow.existingSecret -}}
{{- if $mlflow.name }}
{{- range $key, $suffix := dict "usernameKey" "USERNAME" "passwordKey" "PASSWORD" "tokenKey" "TOKEN" }}
{{- with index $mlflow $key }}
- {name: SCANFLOW_MLFLOW__{{ $suffix }}, secret: {{ $mlflow.name | quote }}, key: {{ . | quote }}}
- {name: MLFLOW_TRACKING_{{ $suffix }}, secret: {{ $mlflow.name | quote }}, key: {{ . | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Environment variables from the credentials Secrets (never inlined); call with
(dict "root" $ "user" NAME): NAME is the NATS user under natsAuthorization.
*/}}
{{- define "scanflow-agents.secretEnv" -}}
{{- $auth := .root.Values.natsAuthorization -}}
{{- if $auth.enabled }}
- name: SCANFLOW_NATS__USER
  value: {{ .user | quote }}
- name: SCANFLOW_NATS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: {{ .user }}
- name: SCANFLOW_NATS__INBOX_PREFIX
  value: {{ printf "_INBOX.%s" .user | quote }}
{{- end -}}
{{- $nats := .root.Values.nats.existingSecret -}}
{{- if and $nats.name (not $auth.enabled) -}}
{{- range $key, $var := dict "userKey" "SCANFLOW_NATS__USER" "passwordKey" "SCANFLOW_NATS__PASSWORD" "tokenKey" "SCANFLOW_NATS__TOKEN" -}}
{{- if index $nats $key }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $nats.name }}
      key: {{ index $nats $key }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $mlflow := .root.Values.mlflow.existingSecret -}}
{{- if $mlflow.name -}}
{{- range $key, $var := dict "usernameKey" "SCANFLOW_MLFLOW__USERNAME" "passwordKey" "SCANFLOW_MLFLOW__PASSWORD" "tokenKey" "SCANFLOW_MLFLOW__TOKEN" -}}
{{- if index $mlflow $key }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $mlflow.name }}
      key: {{ index $mlflow $key }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The name of the chart's Roles and RoleBindings in the namespaces it supervises:
the release's full name and its namespace, so that two releases of one name
(in two release namespaces) sharing a team namespace never take each other's.
*/}}
{{- define "scanflow-agents.rbacName" -}}
{{- printf "%s-%s" (include "scanflow-agents.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/*
The RoleBinding of the chart's service account to a Role; call with
(dict "root" $ "namespace" NS) and optionally "role" (default: rbacName).
*/}}
{{- define "scanflow-agents.roleBinding" }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .role | default (include "scanflow-agents.rbacName" .root) }}
  namespace: {{ .namespace }}
  labels:
    {{- include "scanflow-agents.labels" .root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .role | default (include "scanflow-agents.rbacName" .root) }}
subjects:
  - kind: ServiceAccount
    name: {{ include "scanflow-agents.serviceAccountName" .root }}
    namespace: {{ .root.Release.Namespace }}
{{- end }}
