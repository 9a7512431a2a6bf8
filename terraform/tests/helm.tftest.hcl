# terraform test: helm mode with mocked providers (no cluster, no Grafana).

mock_provider "incus" {}
mock_provider "helm" {}
mock_provider "grafana" {}

variables {
  mode          = "helm"
  spoor_version = "0.1.0"
}

run "helm_release_is_pinned_and_atomic" {
  command = plan

  assert {
    condition     = helm_release.spoor[0].version == "0.1.0" && helm_release.spoor[0].atomic && helm_release.spoor[0].cleanup_on_fail
    error_message = "the release pins the chart version and is atomic with cleanup_on_fail"
  }

  assert {
    condition     = helm_release.spoor[0].max_history == 10
    error_message = "the release keeps a bounded history"
  }

  assert {
    condition     = yamldecode(helm_release.spoor[0].values[0]).server.resources.limits.memory == "1Gi"
    error_message = "the server's memory limit is always set (LimitRange defaults never apply)"
  }

  assert {
    condition     = length(incus_instance.server) == 0
    error_message = "helm mode creates no Incus instance"
  }

  assert {
    condition     = output.otlp_grpc_endpoint == "spoor-collector.observability.svc:4317"
    error_message = "OTLP goes to the collector service"
  }
}

run "helm_three_replicas_on_s3" {
  command = plan

  variables {
    name         = "traces"
    server_count = 3
    storage      = { backend = "s3", s3 = { bucket = "traces" } }
  }

  assert {
    condition     = yamldecode(helm_release.spoor[0].values[0]).server.replicas == 3
    error_message = "server_count becomes the StatefulSet's replicas"
  }

  assert {
    condition     = output.server_endpoints[2].api == "http://traces-spoor-server-2.traces-spoor-server-headless.observability.svc:3200"
    error_message = "the outputs name each server pod under the headless Service"
  }

  assert {
    condition     = output.query_url == "http://traces-spoor-server.observability.svc:3200"
    error_message = "the query URL is the chart's server Service (release-chart name)"
  }
}
