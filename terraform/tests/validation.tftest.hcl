# terraform test: the variable validations refuse bad input.

mock_provider "incus" {}
mock_provider "helm" {}
mock_provider "grafana" {}

variables {
  mode          = "helm"
  spoor_version = "0.1.0"
}

run "mode_must_be_incus_or_helm" {
  command = plan
  variables {
    mode = "docker"
  }
  expect_failures = [var.mode]
}

run "version_must_be_exact" {
  command = plan
  variables {
    spoor_version = "latest"
  }
  expect_failures = [var.spoor_version]
}

run "s3_needs_a_bucket" {
  command = plan
  variables {
    storage = { backend = "s3", s3 = { bucket = "" } }
  }
  expect_failures = [var.storage]
}

run "retention_is_a_duration" {
  command = plan
  variables {
    retention = "two weeks"
  }
  expect_failures = [var.retention]
}

run "incus_needs_a_package_source" {
  command = plan
  variables {
    mode = "incus"
  }
  expect_failures = [incus_instance.server]
}

run "server_count_is_a_positive_whole_number" {
  command = plan
  variables {
    server_count = 0
  }
  expect_failures = [var.server_count]
}

run "several_helm_servers_need_s3" {
  command = plan
  variables {
    server_count = 3
  }
  expect_failures = [helm_release.spoor]
}

run "several_incus_servers_need_s3" {
  command = plan
  variables {
    mode           = "incus"
    server_count   = 2
    package_source = { type = "apt", apt_repository = "deb https://apt.example/spoor stable main" }
  }
  expect_failures = [incus_instance.server]
}
