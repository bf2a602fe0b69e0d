{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "vephys.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-vephys, or the release name when it already contains the chart name. */}}
{{- define "vephys.fullname" -}}
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

{{- define "vephys.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "vephys.labels" -}}
helm.sh/chart: {{ include "vephys.chart" . }}
app.kubernetes.io/name: {{ include "vephys.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vephys
{{- end }}

{{/* Selector labels of one component: include "vephys.selectorLabels" (dict "ctx" $ "component" "worker") */}}
{{- define "vephys.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vephys.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "vephys.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "vephys.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vephys.worker.fullname" -}}
{{- printf "%s-worker" (include "vephys.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vephys.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vephys.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the tokens. */}}
{{- define "vephys.tokenSecret" -}}
{{- if .Values.auth.create }}
{{- printf "%s-tokens" (include "vephys.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- required "auth.existingSecret is required (a Secret with the worker and user tokens), or set auth.create=true" .Values.auth.existingSecret }}
{{- end }}
{{- end }}

{{/* Image reference: include "vephys.image" (dict "image" .Values.coordinator.image "ctx" $) */}}
{{- define "vephys.image" -}}
{{- if eq (toString .image.tag) "latest" }}
{{- fail (printf "image tag `latest` is not allowed for %s: use a version tag, or pin image.digest" .image.repository) }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The coordinator's gRPC URL, as workers dial it. */}}
{{- define "vephys.coordinator.url" -}}
{{- $scheme := ternary "https" "http" .Values.coordinator.tls.enabled }}
{{- printf "%s://%s:%d" $scheme (include "vephys.coordinator.fullname" .) (int .Values.coordinator.grpcPort) }}
{{- end }}

{{/* VEPHYS_DATABASE_URL from the database Secret. */}}
{{- define "vephys.databaseEnv" -}}
- name: VEPHYS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required: a Secret holding the postgres:// URL" .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
- name: VEPHYS_DATABASE_MAX_CONNECTIONS
  value: {{ .Values.database.maxConnections | quote }}
{{- if include "vephys.databaseCa.enabled" . }}
- name: VEPHYS_DATABASE_CA
  value: /etc/vephys/database-ca/ca.crt
{{- end }}
{{- end }}

{{/*
Checkov skips of a workload, each with its reason (checkov reads checkov.io/skipN annotations):
include "vephys.checkovSkips" (dict "image" .Values.worker.image "noProbes" true)
*/}}
{{- define "vephys.checkovSkips" -}}
{{- $skips := list "CKV_K8S_35=the processes read the database URL, tokens and S3 keys only from flags or environment variables (no file options), so the Secret is mapped to env; the values never appear in the manifest" }}
{{- if not .image.digest }}
{{- $skips = append $skips "CKV_K8S_43=images are built per site from docker/*.Dockerfile so the chart cannot ship a digest; set image.digest to pin one (this check and CKV_K8S_15 then pass); tags are versions and the schema refuses latest" }}
{{- $skips = append $skips "CKV_K8S_15=pullPolicy IfNotPresent is kept for tag-addressed images: tags are immutable versions (never latest), and Always breaks nodes with preloaded or air-gapped images; digest-pinned images pass this check" }}
{{- end }}
{{- if .noProbes }}
{{- $skips = append $skips "CKV_K8S_8=the worker serves no port; its lease heartbeats are its liveness (a stuck worker's leases expire and its jobs are re-leased) and a dead process already restarts the container" }}
{{- $skips = append $skips "CKV_K8S_9=the worker receives no traffic, so there is nothing to gate on readiness: it pulls work from the coordinator" }}
{{- end }}
{{- range $i, $s := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $s | quote }}
{{- end }}
{{- end }}

{{/*
Mebibytes of a storage quantity (2Gi -> 2048, 500M -> 477), rounded up:
include "vephys.mebibytes" "2Gi"
*/}}
{{- define "vephys.mebibytes" -}}
{{- $q := toString . }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $unit := trimPrefix $num $q }}
{{- $bytes := dict "" 1.0 "k" 1000.0 "Ki" 1024.0 "M" 1000000.0 "Mi" 1048576.0 "G" 1000000000.0 "Gi" 1073741824.0 "T" 1000000000000.0 "Ti" 1099511627776.0 }}
{{- if not (hasKey $bytes $unit) }}
{{- fail (printf "`%s` is not a storage quantity (e.g. 512Mi, 2Gi)" $q) }}
{{- end }}
{{- divf (mulf (float64 $num) (get $bytes $unit)) 1048576.0 | ceil | int64 }}
{{- end }}

{{/*
A container's resources with the ephemeral storage its pod's emptyDirs can fill: request and
limit are the sum of their sizeLimits plus ephemeralStorageHeadroom (logs), unless the values set
ephemeral-storage themselves; `extra` adds extended resources (GPUs) to both:
include "vephys.resources" (dict "resources" $w.resources "emptyDirs" (list "2Gi") "extra" (dict) "ctx" $)
*/}}
{{- define "vephys.resources" -}}
{{- $res := deepCopy (.resources | default dict) }}
{{- $req := get $res "requests" | default dict }}
{{- $lim := get $res "limits" | default dict }}
{{- $mi := int64 (include "vephys.mebibytes" .ctx.Values.ephemeralStorageHeadroom) }}
{{- range .emptyDirs }}
{{- $mi = add $mi (int64 (include "vephys.mebibytes" .)) }}
{{- end }}
{{- if not (hasKey $req "ephemeral-storage") }}
{{- $_ := set $req "ephemeral-storage" (printf "%dMi" $mi) }}
{{- end }}
{{- if not (hasKey $lim "ephemeral-storage") }}
{{- $_ := set $lim "ephemeral-storage" (printf "%dMi" $mi) }}
{{- end }}
{{- range $k, $v := .extra }}
{{- $_ := set $req $k $v }}
{{- $_ := set $lim $k $v }}
{{- end }}
{{- $_ := set $res "requests" $req }}
{{- $_ := set $res "limits" $lim }}
{{- toYaml $res }}
{{- end }}

{{/*
GPU: what a worker asks for and where it may run, from worker.gpu and the strategy the NVIDIA
GPU Operator advertises devices with (README: GPUs).
*/}}
{{- define "vephys.gpu.check" -}}
{{- $g := .Values.worker.gpu }}
{{- if and (ne $g.migStrategy "none") (not $g.migProfile) }}
{{- fail (printf "worker.gpu.migProfile is required with worker.gpu.migStrategy=%s: the MIG profile of the slices, e.g. 1g.10gb" $g.migStrategy) }}
{{- end }}
{{- if and (eq $g.migStrategy "none") $g.migProfile }}
{{- fail "worker.gpu.migProfile applies to migStrategy single or mixed; with migStrategy none (whole GPUs) leave it empty" }}
{{- end }}
{{- end }}

{{/* The extended resource of one device. */}}
{{- define "vephys.gpu.resourceName" -}}
{{- $g := .Values.worker.gpu }}
{{- if $g.resourceName }}
{{- $g.resourceName }}
{{- else if eq $g.migStrategy "mixed" }}
{{- printf "nvidia.com/mig-%s" $g.migProfile }}
{{- else }}
{{- "nvidia.com/gpu" }}
{{- end }}
{{- end }}

{{/*
Node requirements of a GPU worker (JSON {"exprs": [NodeSelectorRequirement...]}), from the
labels GPU feature discovery writes:
  none   whole GPUs: no MIG slice (`nvidia.com/gpu.slices.gi` is written for single-strategy slices only)
  single nvidia.com/mig.strategy=single and nvidia.com/gpu.product=<product>-MIG-<profile>
         (or, without a product, the MIG manager's nvidia.com/mig.config=all-<profile>)
  mixed  nvidia.com/mig.strategy=mixed (the resource nvidia.com/mig-<profile> names the profile)
and nvidia.com/gpu.product=<product> when a product is given (none, mixed).
*/}}
{{- define "vephys.gpu.nodeRequirements" -}}
{{- $g := .Values.worker.gpu }}
{{- $exprs := list }}
{{- if gt (int $g.count) 0 }}
{{- if eq $g.migStrategy "single" }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/mig.strategy" "operator" "In" "values" (list "single")) }}
{{- if $g.product }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/gpu.product" "operator" "In" "values" (list (printf "%s-MIG-%s" $g.product $g.migProfile))) }}
{{- else }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/mig.config" "operator" "In" "values" (list (printf "all-%s" $g.migProfile))) }}
{{- end }}
{{- else }}
{{- if eq $g.migStrategy "mixed" }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/mig.strategy" "operator" "In" "values" (list "mixed")) }}
{{- else }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/gpu.slices.gi" "operator" "DoesNotExist") }}
{{- end }}
{{- if $g.product }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/gpu.product" "operator" "In" "values" (list $g.product)) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson (dict "exprs" $exprs) }}
{{- end }}

{{/*
worker.affinity with the GPU node requirements added to every required node selector term (the
terms are ORed, the expressions within one ANDed), or as the only term.
*/}}
{{- define "vephys.worker.affinity" -}}
{{- $aff := deepCopy (.Values.worker.affinity | default dict) }}
{{- $exprs := (include "vephys.gpu.nodeRequirements" . | fromJson).exprs }}
{{- if $exprs }}
{{- $na := get $aff "nodeAffinity" | default dict }}
{{- $req := get $na "requiredDuringSchedulingIgnoredDuringExecution" | default dict }}
{{- $terms := list }}
{{- range (get $req "nodeSelectorTerms" | default list) }}
{{- $t := deepCopy . }}
{{- $_ := set $t "matchExpressions" (concat (get $t "matchExpressions" | default list) $exprs) }}
{{- $terms = append $terms $t }}
{{- end }}
{{- if not $terms }}
{{- $terms = list (dict "matchExpressions" $exprs) }}
{{- end }}
{{- $_ := set $req "nodeSelectorTerms" $terms }}
{{- $_ := set $na "requiredDuringSchedulingIgnoredDuringExecution" $req }}
{{- $_ := set $aff "nodeAffinity" $na }}
{{- end }}
{{- if $aff }}
{{- toYaml $aff }}
{{- end }}
{{- end }}

{{/* A CA file for a client, from a ConfigMap or Secret: include "vephys.caVolume" (dict "name" "database-ca" "configMap" "" "secret" "s" "key" "ca.crt") */}}
{{- define "vephys.caVolume" -}}
- name: {{ .name }}
  {{- if .configMap }}
  configMap:
    name: {{ .configMap }}
    items:
      - key: {{ .key }}
        path: ca.crt
  {{- else }}
  secret:
    secretName: {{ .secret }}
    items:
      - key: {{ .key }}
        path: ca.crt
  {{- end }}
{{- end }}

{{/* Whether the database has a CA configured ("true" or ""). */}}
{{- define "vephys.databaseCa.enabled" -}}
{{- if or .Values.database.ca.existingSecret .Values.database.ca.existingConfigMap }}true{{ end }}
{{- end }}

{{- define "vephys.databaseCa.volume" -}}
{{- include "vephys.caVolume" (dict "name" "database-ca" "configMap" .Values.database.ca.existingConfigMap "secret" .Values.database.ca.existingSecret "key" .Values.database.ca.key) }}
{{- end }}

{{/* Whether clients get the coordinator's CA ("true" or ""). */}}
{{- define "vephys.coordinatorCa.enabled" -}}
{{- if and .Values.coordinator.tls.enabled .Values.coordinator.tls.ca.enabled }}true{{ end }}
{{- end }}

{{- define "vephys.coordinatorCa.volume" -}}
{{- $ca := .Values.coordinator.tls.ca }}
{{- include "vephys.caVolume" (dict "name" "coordinator-ca" "configMap" $ca.existingConfigMap "secret" ($ca.existingSecret | default .Values.coordinator.tls.existingSecret) "key" $ca.key) }}
{{- end }}

{{/* Client env for the coordinator's API: URL and, with TLS, the CA. */}}
{{- define "vephys.coordinatorClientEnv" -}}
- name: VEPHYS_COORDINATOR
  value: {{ include "vephys.coordinator.url" . | quote }}
{{- if include "vephys.coordinatorCa.enabled" . }}
- name: VEPHYS_CA_CERT
  value: /etc/vephys/coordinator-ca/ca.crt
{{- end }}
{{- end }}

{{/* The tokens of a chart-made Secret, derived from auth.tokenSeed (stable across renders). */}}
{{- define "vephys.generatedTokens" -}}
{{- $seed := required "auth.create=true needs auth.tokenSeed (at least 32 random characters, e.g. `openssl rand -hex 32`): the tokens are derived from it so every render gives the same ones; or create the Secret yourself and set auth.existingSecret" .Values.auth.tokenSeed }}
{{- toJson (dict "worker" (printf "%s/worker-token" $seed | sha256sum) "user" (printf "%s/user-token" $seed | sha256sum)) }}
{{- end }}

{{/* Pod annotations that roll the pods when chart-made tokens change. */}}
{{- define "vephys.tokensChecksum" -}}
{{- if .Values.auth.create }}
checksum/tokens: {{ include "vephys.generatedTokens" . | sha256sum | quote }}
{{- end }}
{{- end }}

{{/* The KEDA query: keda.query, or the chart's (files/keda-query.sql). */}}
{{- define "vephys.kedaQuery" -}}
{{- .Values.keda.query | default (.Files.Get "files/keda-query.sql") | trim }}
{{- end }}

{{/* "true" when the coordinator's PDB leaves room for an eviction: minAvailable (a percentage
rounds up, as Kubernetes does) below replicaCount. */}}
{{- define "vephys.pdb.satisfiable" -}}
{{- $c := .Values.coordinator }}
{{- $replicas := int $c.replicaCount }}
{{- $needed := 0 }}
{{- if kindIs "string" $c.pdb.minAvailable }}
{{- $needed = divf (mulf (float64 (trimSuffix "%" $c.pdb.minAvailable)) $replicas) 100 | ceil | int }}
{{- else }}
{{- $needed = int $c.pdb.minAvailable }}
{{- end }}
{{- if lt $needed $replicas }}true{{ end }}
{{- end }}
