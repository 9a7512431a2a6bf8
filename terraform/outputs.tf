locals {
  # The chart's resource name prefix ("spoor.fullname"): the release name when it
  # contains the chart name, else release-chart.
  helm_fullname = strcontains(var.name, "spoor") ? var.name : "${var.name}-spoor"

  # Where spoor-server and the OTLP entry point are reachable from the clients' network.
  server_host    = local.incus ? try(incus_instance.server[0].ipv4_address, "") : "${local.helm_fullname}-server.${var.namespace}.svc"
  collector_host = local.incus ? try(incus_instance.collector[0].ipv4_address, "") : "${local.helm_fullname}-collector.${var.namespace}.svc"
  otlp_host      = var.collector_enabled ? local.collector_host : local.server_host
  otlp_ports     = var.collector_enabled ? { grpc = 4317, http = 4318 } : { grpc = 4319, http = 4320 }
  query_url      = "http://${local.server_host}:3200"

  # Every server by its own address: Incus instance addresses, or the StatefulSet pods'
  # stable names under the chart's headless Service.
  server_hosts = local.incus ? incus_instance.server[*].ipv4_address : [
    for i in range(var.server_count) : "${local.helm_fullname}-server-${i}.${local.helm_fullname}-server-headless.${var.namespace}.svc"
  ]
}

output "otlp_grpc_endpoint" {
  description = "OTLP/gRPC endpoint applications send traces to (the collector when enabled, else the server), as host:port."
  value       = "${local.otlp_host}:${local.otlp_ports.grpc}"
}

output "otlp_http_endpoint" {
  description = "OTLP/HTTP base URL applications send traces to (POST /v1/traces)."
  value       = "http://${local.otlp_host}:${local.otlp_ports.http}"
}

output "query_url" {
  description = "spoor-server's HTTP API (Tempo API, /ready, /metrics): the Tempo datasource URL."
  value       = local.query_url
}

output "server_endpoints" {
  description = "Every spoor-server, in order: `api` (HTTP API base URL; any server answers any query) and `otlp_grpc` (host:port the collector balances over)."
  value       = [for host in local.server_hosts : { api = "http://${host}:3200", otlp_grpc = "${host}:4319" }]
}

output "tempo_datasource_uid" {
  description = "UID of the Tempo datasource pointing at spoor-server (fixed by grafana/provisioning)."
  value       = local.grafana_datasources["tempo"].uid
}

output "grafana_dashboard_urls" {
  description = "Links to the spoor dashboards in Grafana (empty when Grafana is disabled or grafana_url is unset)."
  value       = var.grafana_enabled && var.grafana_url != "" ? { for name, dashboard in grafana_dashboard.spoor : name => "${trimsuffix(var.grafana_url, "/")}/d/${dashboard.uid}" } : {}
}

output "helm_release" {
  description = "Name, namespace, chart version and revision of the Helm release (null in incus mode)."
  value = local.helm ? {
    name      = helm_release.spoor[0].name
    namespace = helm_release.spoor[0].namespace
    version   = helm_release.spoor[0].version
    revision  = helm_release.spoor[0].metadata.revision
  } : null
}

output "incus_instances" {
  description = "Names of the Incus instances (empty in helm mode)."
  value       = local.incus ? concat(incus_instance.server[*].name, incus_instance.collector[*].name) : []
}
