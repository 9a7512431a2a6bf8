# spoor on an Incus host: two system containers with the packages from a local build
# (`make deb`), and the datasources and dashboard in an existing Grafana.
#
#   terraform init && terraform apply -var grafana_auth=admin:secret

provider "incus" {}

provider "grafana" {
  url  = var.grafana_url
  auth = var.grafana_auth
}

module "spoor" {
  source = "../.."

  mode          = "incus"
  name          = "spoor"
  spoor_version = "0.1.0"

  package_source = {
    type    = "local"
    deb_dir = pathexpand("~/.cache/spoor-target/packages")
  }
  incus_limits = { cpu = 2, memory = "2GiB" }

  retention = "14d"
  tenants = {
    acme = { retention = "30d" }
  }

  grafana_url    = var.grafana_url
  prometheus_url = "http://prometheus.example:9090"
  loki_url       = "http://loki.example:3100"
}
