terraform {
  # 1.7: `terraform test` with mock_provider (tests/); optional() object attributes need 1.3.
  required_version = ">= 1.7.0"

  required_providers {
    incus = {
      source  = "lxc/incus"
      version = "~> 1.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.0"
    }
    grafana = {
      source  = "grafana/grafana"
      version = "~> 4.0"
    }
  }
}
