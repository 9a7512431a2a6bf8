variable "grafana_url" {
  description = "Grafana's base URL."
  type        = string
  default     = "http://localhost:3000"
}

variable "grafana_auth" {
  description = "Grafana credentials: `user:password` or a service account token."
  type        = string
  sensitive   = true
}
