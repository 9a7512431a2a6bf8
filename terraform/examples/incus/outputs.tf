output "otlp_grpc_endpoint" {
  description = "Where applications send OTLP/gRPC."
  value       = module.spoor.otlp_grpc_endpoint
}

output "query_url" {
  description = "spoor-server's Tempo API."
  value       = module.spoor.query_url
}
