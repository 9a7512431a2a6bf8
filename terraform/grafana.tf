# Grafana: the datasources of grafana/provisioning/datasources/spoor.yaml and the
# dashboards of grafana/dashboards/, read from those files (one source of truth) and
# created through Grafana's API. Needs the repository checkout around the module (use it
# as `git::…//terraform`, not a copy of this directory alone).

locals {
  grafana_provisioning = yamldecode(file("${path.module}/../grafana/provisioning/datasources/spoor.yaml"))
  grafana_datasources  = { for source in local.grafana_provisioning.datasources : source.uid => source }

  # The provisioning file takes its URLs and the tenant from Grafana's environment; here
  # they come from variables and from where spoor-server runs.
  grafana_datasource_urls = {
    tempo      = local.query_url
    prometheus = var.prometheus_url
    loki       = var.loki_url
  }

  grafana_dashboards = fileset("${path.module}/../grafana/dashboards", "*.json")
}

resource "grafana_folder" "spoor" {
  count = var.grafana_enabled ? 1 : 0

  title = var.grafana_folder
  uid   = "spoor"
}

resource "grafana_data_source" "spoor" {
  for_each = var.grafana_enabled ? local.grafana_datasources : {}

  uid         = each.value.uid
  name        = each.value.name
  type        = each.value.type
  url         = local.grafana_datasource_urls[each.key]
  access_mode = each.value.access
  is_default  = each.value.isDefault

  # Provisioning files escape Grafana's own macros as `$$` against environment
  # expansion; the API takes them unescaped (`$__tags`, `${__value.raw}`).
  json_data_encoded = replace(jsonencode(each.value.jsonData), "$$", "$")

  secure_json_data_encoded = each.key == "tempo" ? jsonencode({ httpHeaderValue1 = var.grafana_tenant }) : null
}

resource "grafana_dashboard" "spoor" {
  for_each = var.grafana_enabled ? local.grafana_dashboards : toset([])

  folder      = grafana_folder.spoor[0].uid
  config_json = file("${path.module}/../grafana/dashboards/${each.value}")
  overwrite   = true
  message     = "spoor ${var.spoor_version} (Terraform)"
}
