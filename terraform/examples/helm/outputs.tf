output "otlp_grpc_endpoint" {
  description = "Where applications in the cluster send OTLP/gRPC."
  value       = module.spoor.otlp_grpc_endpoint
}

output "helm_release" {
  description = "The Helm release."
  value       = module.spoor.helm_release
}
