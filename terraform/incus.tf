# Incus mode: two system containers (spoor-server, spoor-collector) from a cloud-init
# image. Terraform pushes the configuration files (and, with package_source.type = local,
# the .deb files) before first boot; cloud-init installs the packages at the pinned
# version and starts the units.

locals {
  deb_revision = "1"

  # The variables of templates/server.yaml.tftpl. tests/python/test_terraform.py renders
  # the templates with the same variables for the Incus test (test_terraform_incus.py).
  server_template_vars = {
    storage_json          = jsonencode(local.storage_config)
    retention             = var.retention
    tenant_retention_json = jsonencode(local.tenant_retention)
  }
  server_config = templatefile("${path.module}/templates/server.yaml.tftpl", local.server_template_vars)

  package_dir = "/var/cache/spoor"
  packages = {
    for component in ["server", "collector"] : component => {
      name = "spoor-${component}"
      deb  = "spoor-${component}_${var.spoor_version}-${local.deb_revision}_amd64.deb"
    }
  }
  cloud_init = {
    for component, package in local.packages : component => templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      package     = package.name
      config_file = "/etc/spoor/${component}.yaml"
      # The account line both packages ship (packaging/sysusers.d/).
      sysusers = trimspace(one([for line in split("\n", file("${path.module}/../packaging/sysusers.d/${package.name}.conf")) : line if startswith(line, "u ")]))
      apt_source_command = try(var.package_source.type, "") == "apt" ? join(" ", [
        "echo '${try(var.package_source.apt_repository, "")}' > /etc/apt/sources.list.d/spoor.list",
        "&& apt-get update &&",
      ]) : ""
      package_spec = try(var.package_source.type, "") == "local" ? "${local.package_dir}/${package.deb}" : "${package.name}=${var.spoor_version}-${local.deb_revision}"
    })
  }
}

resource "incus_profile" "spoor" {
  count = local.incus ? 1 : 0

  name        = var.name
  description = "spoor ${var.spoor_version}: limits of the spoor-server and spoor-collector instances"
  config = {
    "limits.cpu"     = tostring(var.incus_limits.cpu)
    "limits.memory"  = var.incus_limits.memory
    "boot.autostart" = "true"
  }
}

resource "incus_instance" "server" {
  count = local.incus ? 1 : 0

  name     = "${var.name}-server"
  image    = var.incus_image
  profiles = concat(var.incus_profiles, [incus_profile.spoor[0].name])
  config = {
    "cloud-init.user-data" = local.cloud_init["server"]
  }

  file {
    content            = local.server_config
    target_path        = "/etc/spoor/server.yaml"
    mode               = "0640"
    create_directories = true
  }

  dynamic "file" {
    for_each = try(var.package_source.type, "") == "local" ? [local.packages["server"]] : []
    content {
      source_path        = "${var.package_source.deb_dir}/${file.value.deb}"
      target_path        = "${local.package_dir}/${file.value.deb}"
      mode               = "0644"
      create_directories = true
    }
  }

  # The collector sends to this address.
  wait_for {
    type = "ipv4"
  }

  lifecycle {
    precondition {
      condition     = var.package_source != null
      error_message = "Incus mode needs package_source (an apt repository or a directory of .deb files)."
    }
  }
}

resource "incus_instance" "collector" {
  count = local.incus && var.collector_enabled ? 1 : 0

  name     = "${var.name}-collector"
  image    = var.incus_image
  profiles = concat(var.incus_profiles, [incus_profile.spoor[0].name])
  config = {
    "cloud-init.user-data" = local.cloud_init["collector"]
  }

  file {
    content = templatefile("${path.module}/templates/collector.yaml.tftpl", {
      server_otlp_grpc = "${incus_instance.server[0].ipv4_address}:4319"
    })
    target_path        = "/etc/spoor/collector.yaml"
    mode               = "0640"
    create_directories = true
  }

  dynamic "file" {
    for_each = try(var.package_source.type, "") == "local" ? [local.packages["collector"]] : []
    content {
      source_path        = "${var.package_source.deb_dir}/${file.value.deb}"
      target_path        = "${local.package_dir}/${file.value.deb}"
      mode               = "0644"
      create_directories = true
    }
  }

  wait_for {
    type = "ipv4"
  }
}

# Readiness of the services, not just of the containers: cloud-init has finished and the
# units are active (both are Type=notify: active means READY=1, sent after the listeners
# are bound and, for the server, the WAL is replayed). Needs the incus CLI where Terraform runs.
resource "terraform_data" "ready" {
  for_each = local.incus && var.wait_for_ready ? merge(
    { server = incus_instance.server[0].name },
    var.collector_enabled ? { collector = incus_instance.collector[0].name } : {},
  ) : {}

  triggers_replace = [each.value, var.spoor_version]

  provisioner "local-exec" {
    command = "incus exec ${each.value} -- sh -c 'cloud-init status --wait >/dev/null; timeout 300 sh -c \"until systemctl is-active --quiet spoor-${each.key}; do sleep 2; done\"'"
  }
}
