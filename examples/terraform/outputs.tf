output "layer_arn" {
  description = "ARN of the published otel-xray layer version."
  value       = aws_lambda_layer_version.otel_xray.arn
}

output "function_name" {
  description = "Name of the sample function (invoke it, then look for its trace in X-Ray)."
  value       = aws_lambda_function.orders.function_name
}

output "function_arn" {
  value = aws_lambda_function.orders.arn
}

output "role_arn" {
  value = aws_iam_role.function.arn
}
