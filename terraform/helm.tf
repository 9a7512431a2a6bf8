# Helm mode: one release of packaging/helm/spoor. The module's values come first, the
# caller's var.helm_values last (they win).

locals {
  memory_mib = endswith(var.server_resources.memory, "Gi") ? tonumber(trimsuffix(var.server_resources.memory, "Gi")) * 1024 : tonumber(trimsuffix(var.server_resources.memory, "Mi"))

  # spoor-server's memory knobs sized from its limit (the chart's tests check the same
  # rule): 2 × head + compaction + in-flight requests + 64Mi fit in the limit.
  head_block_mib  = max(16, floor((local.memory_mib - 64) / 8))
  compaction_mib  = 2 * local.head_block_mib
  in_flight_mib   = min(64, local.head_block_mib)
  chart_reference = coalesce(var.chart, "${path.module}/../packaging/helm/spoor")

  helm_values = {
    image = {
      prefix = var.image_prefix
      tag    = var.spoor_version
    }
    server = {
      replicas = var.server_count
      resources = {
        requests = { cpu = var.server_resources.cpu, memory = var.server_resources.memory }
        limits   = { memory = var.server_resources.memory }
      }
      memory = {
        headMaxBlockSize       = "${local.head_block_mib}MiB"
        compactionMaxBlockSize = "${local.compaction_mib}MiB"
        ingestMaxInflightBytes = "${local.in_flight_mib}MiB"
      }
    }
    storage = {
      backend = var.storage.backend
      s3 = var.storage.backend == "s3" ? {
        bucket         = var.storage.s3.bucket
        endpoint       = var.storage.s3.endpoint
        region         = var.storage.s3.region
        prefix         = var.storage.s3.prefix
        forcePathStyle = var.storage.s3.force_path_style
        allowHttp      = var.storage.s3.allow_http
      } : null
    }
    retention       = var.retention
    tenantRetention = local.tenant_retention
    collector       = { enabled = var.collector_enabled }
    # Terraform manages the Grafana datasources and dashboard through the API (grafana.tf),
    # so the chart's sidecar ConfigMaps stay off.
    grafana = { enabled = false }
  }
}

resource "helm_release" "spoor" {
  count = local.helm ? 1 : 0

  name             = var.name
  namespace        = var.namespace
  create_namespace = true
  chart            = local.chart_reference
  repository       = var.chart_repository
  version          = var.chart_version

  # A failed install or upgrade is rolled back and its new resources removed.
  atomic          = true
  cleanup_on_fail = true
  wait            = true
  timeout         = var.helm_timeout
  max_history     = var.helm_max_history

  values = [
    yamlencode(local.helm_values),
    yamlencode(var.helm_values),
  ]

  # Static S3 credentials become a Secret created by the chart; they stay out of the
  # release's plain values.
  lifecycle {
    precondition {
      condition     = local.servers_share_a_bucket
      error_message = local.servers_share_a_bucket_message
    }
  }

  set_sensitive = var.s3_credentials == null ? [] : [
    { name = "storage.s3.credentials.accessKeyId", value = var.s3_credentials.access_key_id },
    { name = "storage.s3.credentials.secretAccessKey", value = var.s3_credentials.secret_access_key },
  ]
}
