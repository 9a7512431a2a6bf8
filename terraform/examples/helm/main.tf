# spoor on Kubernetes from this repository's chart, blocks in an S3-compatible bucket,
# sized for a namespace whose LimitRange caps containers at 1Gi; the datasources and
# dashboard go to an existing Grafana.
#
#   terraform init && terraform apply -var grafana_auth=admin:secret \
#     -var 's3_credentials={access_key_id="…",secret_access_key="…"}'

provider "helm" {
  kubernetes = {
    config_path = "~/.kube/config"
  }
}

provider "grafana" {
  url  = var.grafana_url
  auth = var.grafana_auth
}

module "spoor" {
  source = "../.."

  mode          = "helm"
  name          = "spoor"
  namespace     = "observability"
  spoor_version = "0.1.0"
  chart_version = "0.1.0"
  image_prefix  = "registry.example.com/spoor/"

  storage = {
    backend = "s3"
    s3 = {
      bucket     = "traces"
      endpoint   = "http://minio.storage.svc:9000"
      allow_http = true
    }
  }
  s3_credentials   = var.s3_credentials
  server_resources = { cpu = "500m", memory = "1Gi" }
  helm_values = {
    serviceMonitor = { enabled = true }
  }

  grafana_url    = var.grafana_url
  grafana_tenant = "acme"
  prometheus_url = "http://prometheus-server.monitoring.svc"
  loki_url       = "http://loki-gateway.logging.svc"
}
