# Incus mode: two system containers (spoor-server, spoor-collector) from a cloud-init
# image. Terraform pushes the configuration files (and, with package_source.type = local,
# the .deb files) before first boot; cloud-init installs the packages at the pinned
# version and starts the units.

locals {
  deb_revision = "1"

  # The variables of templates/server.yaml.tftpl. tests/python/test_terraform.py renders
  # the templates with the same variables for the Incus test (test_terraform_incus.py).
  server_names = [for i in range(var.server_count) : i == 0 ? "${var.name}-server" : "${var.name}-server-${i + 1}"]
  # Each server's peers are all the servers (its own name included, which it recognises),
  # by the names the Incus network's DNS gives the instances: the file is written before
  # any instance has an address. Names are resolved again every 10 s.
  server_peers = var.server_count > 1 ? [for name in local.server_names : "${name}.${var.incus_dns_domain}:3200"] : []

  server_template_vars = {
    storage_json          = jsonencode(local.storage_config)
    retention             = var.retention
    tenant_retention_json = jsonencode(local.tenant_retention)
    cluster_json          = jsonencode({ peers = local.server_peers })
  }
  server_config = templatefile("${path.module}/templates/server.yaml.tftpl", local.server_template_vars)

  # The collector's exporter: one server, a plain otlp exporter; several, a loadbalancing
  # exporter by trace ID over their addresses. Each balanced server has its own
  # persistent queue, so they share the 2GiB the single queue gets.
  collector_otlp_settings = {
    tls = { insecure = true }
    sending_queue = { persistent = {
      directory = "/var/lib/spoor-collector/queue"
      max_size  = "${floor(2048 / var.server_count)}MiB"
    } }
  }
  collector_exporter_id = var.server_count > 1 ? "loadbalancing" : "otlp"
  collector_template_vars = {
    exporter_id = local.collector_exporter_id
    exporter_json = jsonencode(var.server_count > 1 ? {
      routing_key = "traceID"
      protocol    = { otlp = local.collector_otlp_settings }
      resolver    = { static = { hostnames = [for server in incus_instance.server : "${server.ipv4_address}:4319"] } }
    } : merge({ endpoint = "${try(incus_instance.server[0].ipv4_address, "")}:4319" }, local.collector_otlp_settings))
  }

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
  count = local.incus ? var.server_count : 0

  name     = local.server_names[count.index]
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
    precondition {
      condition     = local.servers_share_a_bucket
      error_message = local.servers_share_a_bucket_message
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
    content            = templatefile("${path.module}/templates/collector.yaml.tftpl", local.collector_template_vars)
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
  # Keys: server (the first), server-2, …, collector; values: the instance and its unit.
  for_each = local.incus && var.wait_for_ready ? merge(
    { for i, server in incus_instance.server : (i == 0 ? "server" : "server-${i + 1}") => { instance = server.name, unit = "spoor-server" } },
    var.collector_enabled ? { collector = { instance = incus_instance.collector[0].name, unit = "spoor-collector" } } : {},
  ) : {}

  triggers_replace = [each.value.instance, var.spoor_version]

  provisioner "local-exec" {
    command = "incus exec ${each.value.instance} -- sh -c 'cloud-init status --wait >/dev/null; timeout 300 sh -c \"until systemctl is-active --quiet ${each.value.unit}; do sleep 2; done\"'"
  }
}
