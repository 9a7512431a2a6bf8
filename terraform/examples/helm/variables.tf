variable "grafana_url" {
  description = "Grafana's base URL."
  type        = string
  default     = "http://grafana.example"
}

variable "grafana_auth" {
  description = "Grafana credentials: `user:password` or a service account token."
  type        = string
  sensitive   = true
}

variable "s3_credentials" {
  description = "Static S3 credentials; null for ambient ones (IRSA)."
  type = object({
    access_key_id     = string
    secret_access_key = string
  })
  default   = null
  sensitive = true
}
