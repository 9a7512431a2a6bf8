# --- what to deploy, and where ----------------------------------------------------------

variable "mode" {
  description = "Where spoor runs: `incus` (system containers with the deb packages) or `helm` (a Helm release of packaging/helm/spoor on Kubernetes)."
  type        = string

  validation {
    condition     = contains(["incus", "helm"], var.mode)
    error_message = "The mode must be \"incus\" or \"helm\"."
  }
}

variable "name" {
  description = "Name prefix of every resource: Incus instances `<name>-server` / `<name>-collector` and profile `<name>`, or the Helm release name."
  type        = string
  default     = "spoor"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "The name must be a DNS label of 2 to 32 characters: lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "spoor_version" {
  description = "The spoor release to install, pinned: the deb package version (without the `-1` revision) in incus mode, the image tag in helm mode."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+(-[0-9A-Za-z.]+)?$", var.spoor_version))
    error_message = "The spoor_version must be an exact version such as \"0.1.0\", not a range or \"latest\"."
  }
}

variable "server_count" {
  description = "Number of spoor-servers: Incus instances (`<name>-server`, then `<name>-server-2`, …) or StatefulSet replicas. More than one needs `storage.backend = \"s3\"`: they share the bucket and list each other as `cluster.peers`, and the collector balances over them by trace ID."
  type        = number
  default     = 1

  validation {
    condition     = var.server_count >= 1 && var.server_count <= 64 && floor(var.server_count) == var.server_count
    error_message = "server_count is a whole number from 1 to 64."
  }
}

variable "collector_enabled" {
  description = "Run spoor-collector in front of spoor-server (applications send OTLP to the collector)."
  type        = bool
  default     = true
}

# --- storage and tenants ------------------------------------------------------------------

variable "retention" {
  description = "How long blocks are kept (spoor-server `retention.block_retention`), e.g. `14d`."
  type        = string
  default     = "14d"

  validation {
    condition     = can(regex("^[1-9][0-9]*(s|m|h|d|w)$", var.retention))
    error_message = "The retention must be a positive duration such as \"14d\", \"72h\" or \"2w\"."
  }
}

variable "tenants" {
  description = "Tenants (X-Scope-OrgID values) with their own settings; `retention` overrides var.retention for that tenant. Tenants not listed still work with the defaults."
  type = map(object({
    retention = optional(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for id in keys(var.tenants) : can(regex("^[A-Za-z0-9!._*'()-]{1,150}$", id)) && !contains([".", ".."], id)])
    error_message = "Tenant IDs are 1 to 150 characters of letters, digits and !-_.*'(), and not \".\" or \"..\"."
  }

  validation {
    condition     = alltrue([for tenant in values(var.tenants) : tenant.retention == null || can(regex("^[1-9][0-9]*(s|m|h|d|w)$", tenant.retention))])
    error_message = "A tenant's retention must be a positive duration such as \"30d\"."
  }
}

variable "storage" {
  description = "Where spoor-server keeps blocks: `local` (its own disk) or `s3` (an S3-compatible bucket; `bucket` required, `endpoint` empty for AWS)."
  type = object({
    backend = string
    s3 = optional(object({
      bucket           = string
      endpoint         = optional(string, "")
      region           = optional(string, "us-east-1")
      prefix           = optional(string, "")
      force_path_style = optional(bool, true)
      allow_http       = optional(bool, false)
    }))
  })
  default = { backend = "local" }

  validation {
    condition     = contains(["local", "s3"], var.storage.backend)
    error_message = "The storage backend must be \"local\" or \"s3\"."
  }

  validation {
    condition     = var.storage.backend != "s3" || try(length(var.storage.s3.bucket) > 0, false)
    error_message = "The s3 backend needs storage.s3.bucket."
  }

  validation {
    condition     = try(var.storage.s3.endpoint, "") == "" || can(regex("^https?://", try(var.storage.s3.endpoint, "")))
    error_message = "The storage.s3.endpoint must be an http:// or https:// URL (empty for AWS)."
  }
}

variable "s3_credentials" {
  description = "Static S3 credentials for spoor-server; null means ambient credentials (instance role, IRSA). Incus mode writes them to the server's config file (mode 0640); helm mode to a Secret."
  type = object({
    access_key_id     = string
    secret_access_key = string
  })
  default   = null
  sensitive = true
}

# --- incus mode ---------------------------------------------------------------------------

variable "incus_image" {
  description = "Image of both instances; it must run cloud-init (the `/cloud` variants of images.linuxcontainers.org), which installs the packages."
  type        = string
  default     = "images:debian/12/cloud"
}

variable "incus_profiles" {
  description = "Profiles applied before the module's own profile (root disk and network usually come from `default`)."
  type        = list(string)
  default     = ["default"]
}

variable "incus_limits" {
  description = "CPU and memory limits of each instance (Incus `limits.cpu` and `limits.memory`)."
  type = object({
    cpu    = number
    memory = string
  })
  default = { cpu = 2, memory = "2GiB" }

  validation {
    condition     = var.incus_limits.cpu >= 1 && can(regex("^[0-9]+(MiB|GiB|MB|GB)$", var.incus_limits.memory))
    error_message = "incus_limits needs cpu >= 1 and memory such as \"2GiB\"."
  }
}

variable "package_source" {
  description = "Incus mode (required there): where the instances get the packages: `apt` (an apt repository serving spoor-server/spoor-collector at var.spoor_version) or `local` (deb files in `deb_dir`, pushed into the instances)."
  type = object({
    type           = string
    apt_repository = optional(string, "")
    deb_dir        = optional(string, "")
  })
  default = null

  validation {
    condition     = var.package_source == null || contains(["apt", "local"], try(var.package_source.type, ""))
    error_message = "package_source.type must be \"apt\" or \"local\"."
  }

  validation {
    condition     = try(var.package_source.type, "") != "apt" || can(regex("^deb ", var.package_source.apt_repository))
    error_message = "With type = \"apt\", apt_repository is a sources.list line starting with \"deb \"."
  }

  validation {
    condition     = try(var.package_source.type, "") != "local" || length(try(var.package_source.deb_dir, "")) > 0
    error_message = "With type = \"local\", deb_dir names the directory holding the .deb files."
  }
}

variable "incus_dns_domain" {
  description = "DNS domain of the Incus network's own DNS (its `dns.domain`, `incus` by default): with several servers, each lists the others as `<instance>.<domain>:3200` in `cluster.peers`, names that exist before the instances have addresses."
  type        = string
  default     = "incus"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", var.incus_dns_domain))
    error_message = "incus_dns_domain is a DNS domain such as \"incus\" or \"lxd.example\"."
  }
}

variable "wait_for_ready" {
  description = "In incus mode, wait after creation until spoor-server (and spoor-collector) are active; needs the `incus` CLI on the machine running Terraform."
  type        = bool
  default     = true
}

# --- helm mode ----------------------------------------------------------------------------

variable "namespace" {
  description = "Kubernetes namespace of the Helm release (created when missing)."
  type        = string
  default     = "observability"
}

variable "chart" {
  description = "The spoor chart: a local path (default: this repository's packaging/helm/spoor), `oci://…` or a name in var.chart_repository."
  type        = string
  default     = null
}

variable "chart_repository" {
  description = "Helm repository URL of the chart; null for a local path or an oci:// chart."
  type        = string
  default     = null
}

variable "chart_version" {
  description = "Exact chart version (packaging/helm/spoor/Chart.yaml `version`)."
  type        = string
  default     = "0.1.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.chart_version))
    error_message = "The chart_version must be an exact version such as \"0.1.0\"."
  }
}

variable "image_prefix" {
  description = "Registry prefix of the images (`<prefix>spoor-server`, `<prefix>spoor-collector`), e.g. `registry.example.com/spoor/`."
  type        = string
  default     = ""
}

variable "server_resources" {
  description = "Requests and limits of the spoor-server pod. Always set, so a namespace LimitRange's small defaults never apply (the OOM-kill failure of Tempo's chart); the module sizes the server's memory knobs from `memory`."
  type = object({
    cpu    = string
    memory = string
  })
  default = { cpu = "250m", memory = "1Gi" }

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.server_resources.memory)) && (endswith(var.server_resources.memory, "Gi") || tonumber(trimsuffix(var.server_resources.memory, "Mi")) >= 512)
    error_message = "server_resources.memory is in Mi or Gi and at least 512Mi."
  }
}

variable "helm_values" {
  description = "Extra chart values merged last (see packaging/helm/spoor/values.yaml), e.g. `{ serviceMonitor = { enabled = true } }`."
  type        = any
  default     = {}
}

variable "helm_max_history" {
  description = "Release revisions Helm keeps."
  type        = number
  default     = 10

  validation {
    condition     = var.helm_max_history >= 1 && var.helm_max_history <= 100
    error_message = "helm_max_history is between 1 and 100."
  }
}

variable "helm_timeout" {
  description = "Seconds Helm waits for the release to become ready before rolling back (atomic)."
  type        = number
  default     = 600
}

# --- Grafana ------------------------------------------------------------------------------

variable "grafana_enabled" {
  description = "Create the Tempo/Prometheus/Loki datasources and the service-map dashboard in the Grafana the `grafana` provider points at."
  type        = bool
  default     = true
}

variable "grafana_url" {
  description = "Grafana's base URL, for the dashboard link in the outputs (the provider's own `url` and `auth` are set by the caller)."
  type        = string
  default     = ""

  validation {
    condition     = var.grafana_url == "" || can(regex("^https?://", var.grafana_url))
    error_message = "grafana_url is empty or an http(s):// URL."
  }
}

variable "grafana_tenant" {
  description = "Tenant Grafana reads traces of (X-Scope-OrgID); empty for spoor's `single-tenant`."
  type        = string
  default     = ""
}

variable "prometheus_url" {
  description = "URL of the Prometheus holding spoor's span metrics and service graphs (Prometheus datasource)."
  type        = string
  default     = "http://prometheus:9090"

  validation {
    condition     = can(regex("^https?://", var.prometheus_url))
    error_message = "prometheus_url must be an http(s):// URL."
  }
}

variable "loki_url" {
  description = "URL of the Loki holding the applications' logs (Loki datasource)."
  type        = string
  default     = "http://loki:3100"

  validation {
    condition     = can(regex("^https?://", var.loki_url))
    error_message = "loki_url must be an http(s):// URL."
  }
}

variable "grafana_folder" {
  description = "Title of the Grafana folder holding the spoor dashboards."
  type        = string
  default     = "Spoor"
}
