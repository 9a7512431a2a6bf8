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

run "incus_three_servers_share_a_bucket" {
  command = plan

  variables {
    server_count = 3
    storage      = { backend = "s3", s3 = { bucket = "traces", endpoint = "http://10.0.0.5:9000", allow_http = true } }
  }

  assert {
    condition     = incus_instance.server[*].name == ["spoor-server", "spoor-server-2", "spoor-server-3"]
    error_message = "three server instances; the first keeps the one-server name"
  }

  assert {
    condition     = yamldecode(local.server_config).cluster.peers == ["spoor-server.incus:3200", "spoor-server-2.incus:3200", "spoor-server-3.incus:3200"]
    error_message = "every server lists every server's API by its Incus DNS name"
  }

  assert {
    # The exporter's hostnames are the instances' addresses, unknown in a plan; the
    # rendered exporter is checked by test_terraform.py with --check-config.
    condition     = local.collector_exporter_id == "loadbalancing" && local.collector_otlp_settings.sending_queue.persistent.max_size == "682MiB"
    error_message = "several servers: the collector balances by trace ID, each server's queue a third of 2GiB"
  }

  assert {
    condition     = length(output.server_endpoints) == 3
    error_message = "the outputs list every server"
  }
}

run "incus_one_server_has_no_peers" {
  command = plan

  assert {
    condition     = yamldecode(local.server_config).cluster.peers == [] && local.collector_exporter_id == "otlp"
    error_message = "one server: no peers and a plain otlp exporter"
  }
}
