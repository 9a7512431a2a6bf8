# terraform test: incus mode with mocked providers (no Incus server, no Grafana).
#   cd terraform && terraform init && terraform test

mock_provider "incus" {
  mock_resource "incus_instance" {
    defaults = {
      ipv4_address = "10.0.0.10"
    }
  }
}
mock_provider "helm" {}
mock_provider "grafana" {}

variables {
  mode          = "incus"
  spoor_version = "0.1.0"
  package_source = {
    type    = "local"
    deb_dir = "/srv/debs"
  }
  wait_for_ready = false
  tenants = {
    acme = { retention = "30d" }
  }
}

run "incus_creates_server_and_collector" {
  command = plan

  assert {
    condition     = length(incus_instance.server) == 1 && length(incus_instance.collector) == 1
    error_message = "incus mode creates one server and one collector instance"
  }

  assert {
    condition     = length(helm_release.spoor) == 0
    error_message = "incus mode creates no Helm release"
  }

  assert {
    condition     = strcontains(incus_instance.server[0].config["cloud-init.user-data"], "/var/cache/spoor/spoor-server_0.1.0-1_amd64.deb")
    error_message = "the server installs the pinned package"
  }

  assert {
    condition     = yamldecode(local.server_config).retention.per_tenant.acme == "30d"
    error_message = "tenant retention reaches server.yaml"
  }

  assert {
    condition     = length(grafana_data_source.spoor) == 3 && length(grafana_dashboard.spoor) == 1
    error_message = "Grafana gets the three datasources and the service-map dashboard"
  }
}

run "incus_apt_repository" {
  command = plan

  variables {
    package_source = {
      type           = "apt"
      apt_repository = "deb [trusted=yes] https://apt.example/spoor stable main"
    }
    collector_enabled = false
  }

  assert {
    condition     = strcontains(incus_instance.server[0].config["cloud-init.user-data"], "spoor-server=0.1.0-1")
    error_message = "the apt source installs spoor-server=<version>-1"
  }

  assert {
    condition     = length(incus_instance.collector) == 0
    error_message = "no collector when collector_enabled = false"
  }
}
