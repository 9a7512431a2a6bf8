# Values both modes share. The configuration of each mode comes from one place: the
# templates/ files (incus) or the chart's values (helm); grafana/ at the repository root
# is the single source of the Grafana datasources and dashboards.

locals {
  incus = var.mode == "incus"
  helm  = var.mode == "helm"

  tenant_retention = { for id, tenant in var.tenants : id => tenant.retention if tenant.retention != null }

  # Several servers only make sense on one shared bucket: local blocks stay on the disk
  # of the server that wrote them, invisible to the others. Checked by preconditions of
  # the server instances and the Helm release (a variable validation may not read
  # another variable before Terraform 1.9).
  servers_share_a_bucket         = var.server_count == 1 || var.storage.backend == "s3"
  servers_share_a_bucket_message = "server_count = ${var.server_count} needs storage.backend = \"s3\" (one bucket shared by every server): local blocks are not shared between servers."

  # spoor-server's `storage` section (docs/configuration.md), credentials included when static.
  storage_config = var.storage.backend == "s3" ? {
    backend = "s3"
    s3 = merge(
      {
        bucket           = var.storage.s3.bucket
        endpoint         = var.storage.s3.endpoint
        region           = var.storage.s3.region
        prefix           = var.storage.s3.prefix
        force_path_style = var.storage.s3.force_path_style
        allow_http       = var.storage.s3.allow_http
      },
      var.s3_credentials == null ? {} : {
        access_key_id     = var.s3_credentials.access_key_id
        secret_access_key = var.s3_credentials.secret_access_key
      },
    )
    } : {
    backend = "local"
    local   = { path = "/var/lib/spoor-server/blocks" }
  }
}
