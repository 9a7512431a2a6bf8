{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "spoor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "spoor.fullname" -}}
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

{{- define "spoor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spoor.labels" -}}
helm.sh/chart: {{ include "spoor.chart" . }}
app.kubernetes.io/name: {{ include "spoor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (server or collector): call with (list . "server"). */}}
{{- define "spoor.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "spoor.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "spoor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spoor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference of one binary: call with (list . "spoor-server"). */}}
{{- define "spoor.image" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s%s:%s" $ctx.Values.image.prefix (index . 1) (default $ctx.Chart.AppVersion $ctx.Values.image.tag) }}
{{- end }}

{{- define "spoor.serverHost" -}}
{{- printf "%s-server.%s.svc" (include "spoor.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The headless Service of the server StatefulSet: its name, and its DNS name, which
resolves to every ready server pod. */}}
{{- define "spoor.serverHeadless" -}}
{{- printf "%s-server-headless" (include "spoor.fullname" .) }}
{{- end }}

{{- define "spoor.serverHeadlessHost" -}}
{{- printf "%s.%s.svc" (include "spoor.serverHeadless" .) .Release.Namespace }}
{{- end }}

{{/* cluster.peers of several servers: each pod's stable name under the headless Service
(one name per server, as cluster.tls needs), its own included (a server recognises itself). */}}
{{- define "spoor.serverPeers" -}}
{{- $peers := list }}
{{- range $i := until (int .Values.server.replicas) }}
{{- $peers = append $peers (printf "%s-server-%d.%s:3200" (include "spoor.fullname" $) $i (include "spoor.serverHeadlessHost" $)) }}
{{- end }}
{{- toJson $peers }}
{{- end }}

{{/* spoor-server's configuration (docs/configuration.md), merged with server.extraConfig. */}}
{{- define "spoor.serverConfig" -}}
{{- $s3 := .Values.storage.s3 -}}
{{- $storage := dict "backend" .Values.storage.backend -}}
{{- if eq .Values.storage.backend "s3" }}
{{- $_ := set $storage "s3" (dict "bucket" $s3.bucket "endpoint" $s3.endpoint "region" $s3.region "prefix" $s3.prefix "force_path_style" $s3.forcePathStyle "allow_http" $s3.allowHttp) }}
{{- else }}
{{- $_ := set $storage "local" (dict "path" "/var/lib/spoor-server/blocks") }}
{{- end }}
{{- $config := dict
  "api" (dict "listen_address" "0.0.0.0:3200")
  "otlp" (dict "grpc" (dict "listen_address" "0.0.0.0:4319") "http" (dict "listen_address" "0.0.0.0:4320"))
  "wal" (dict "path" "/var/lib/spoor-server/wal" "fsync" "always")
  "storage" $storage
  "head" (dict "max_block_size" .Values.server.memory.headMaxBlockSize)
  "ingest" (dict "max_inflight_bytes" .Values.server.memory.ingestMaxInflightBytes)
  "compaction" (dict "enabled" .Values.server.compaction "max_block_size" .Values.server.memory.compactionMaxBlockSize)
  "retention" (dict "block_retention" .Values.retention "per_tenant" .Values.tenantRetention)
  "log" (dict "level" .Values.server.logLevel "format" "json")
-}}
{{- if gt (int .Values.server.replicas) 1 }}
{{- $_ := set $config "cluster" (dict "peers" (include "spoor.serverPeers" . | fromJsonArray)) }}
{{- end }}
{{- toYaml (mustMergeOverwrite $config (deepCopy .Values.server.extraConfig)) }}
{{- end }}

{{/* spoor-collector's configuration (OpenTelemetry Collector shape, docs/collector.md). */}}
{{- define "spoor.collectorConfig" -}}
{{- $otlp := dict
  "tls" (dict "insecure" true)
  "sending_queue" (dict "persistent" (dict "directory" "/var/lib/spoor-collector/queue" "max_size" .Values.collector.queueMaxSize)) -}}
{{- $exporter := "otlp" }}
{{- if gt (int .Values.server.replicas) 1 }}
{{- /* Each balanced server gets its own persistent queue of max_size: they share
collector.queueMaxSize, so the queue volume holds the lot (plus one share while a
replaced pod's old queue is handed over). */}}
{{- $_ := set $otlp.sending_queue.persistent "max_size" (printf "%dB" (div (include "spoor.bytes" .Values.collector.queueMaxSize | int64) (int64 .Values.server.replicas))) }}
{{- end }}
{{- $exporters := dict "otlp" (merge (dict "endpoint" (printf "%s:4319" (include "spoor.serverHost" .))) $otlp) }}
{{- if gt (int .Values.server.replicas) 1 }}
{{- /* Several servers: spans of one trace must reach one server, so the collector
balances by trace ID over the ready server pods, which the headless Service's DNS name
lists (re-resolved, so pods leaving and returning move only their share). */}}
{{- $exporter = "loadbalancing" }}
{{- $exporters = dict "loadbalancing" (dict
  "routing_key" "traceID"
  "protocol" (dict "otlp" $otlp)
  "resolver" (dict "dns" (dict "hostname" (include "spoor.serverHeadlessHost" .) "port" 4319))) }}
{{- end }}
{{- $config := dict
  "receivers" (dict "otlp" (dict "protocols" (dict "grpc" (dict "endpoint" "0.0.0.0:4317") "http" (dict "endpoint" "0.0.0.0:4318"))))
  "processors" (dict
    "memory_limiter" (dict "check_interval" "1s" "limit_percentage" 50 "spike_limit_percentage" 10)
    "batch" (dict))
  "exporters" $exporters
  "extensions" (dict "health_check" (dict "endpoint" "0.0.0.0:13133"))
  "service" (dict
    "extensions" (list "health_check")
    "pipelines" (dict "traces" (dict "receivers" (list "otlp") "processors" (list "memory_limiter" "batch") "exporters" (list $exporter)))
    "telemetry" (dict "logs" (dict "level" .Values.collector.logLevel) "metrics" (dict "address" "0.0.0.0:8888")))
-}}
{{- toYaml (mustMergeOverwrite $config (deepCopy .Values.collector.extraConfig)) }}
{{- end }}

{{/* The Secret holding S3 credentials, or "" for ambient credentials. */}}
{{- define "spoor.s3Secret" -}}
{{- if .Values.storage.s3.credentialsSecret }}
{{- .Values.storage.s3.credentialsSecret }}
{{- else if and .Values.storage.s3.credentials.accessKeyId .Values.storage.s3.credentials.secretAccessKey }}
{{- printf "%s-s3" (include "spoor.fullname" .) }}
{{- end }}
{{- end }}

{{/* Bytes of a size as values.schema.json allows it (1GiB, 512MB, 1000). */}}
{{- define "spoor.bytes" -}}
{{- $units := dict "" 1 "B" 1 "KiB" 1024 "MiB" 1048576 "GiB" 1073741824 "KB" 1000 "MB" 1000000 "GB" 1000000000 -}}
{{- $number := regexFind "^[0-9]+" . -}}
{{- mul ($number | int64) (get $units (trimPrefix $number .) | int64) -}}
{{- end }}
