# The otel-xray layer and a Python function that uses it: the Terraform twin of template.yaml.

locals {
  layer_zip = "${var.layer_zip_dir}/otel-xray-${var.architecture}.zip"

  # What the layer needs on the function. The wrapper points the function's OpenTelemetry SDK at
  # the extension (OTEL_EXPORTER_OTLP_ENDPOINT) and sets the service name and resource attributes.
  otel_env = {
    AWS_LAMBDA_EXEC_WRAPPER      = "/opt/otel-xray-wrapper"
    OTEL_SERVICE_NAME            = var.function_name
    OTEL_XRAY_EXPORTER           = var.exporter
    OTEL_XRAY_FLUSH              = "end"
    OTEL_XRAY_INDEXED_ATTRIBUTES = var.indexed_attributes
  }
  # Only set when given: an empty endpoint would be a malformed value.
  otlp_env = var.otlp_endpoint == "" ? {} : { OTEL_XRAY_OTLP_ENDPOINT = var.otlp_endpoint }
}

resource "aws_lambda_layer_version" "otel_xray" {
  layer_name               = "otel-xray-${var.architecture}"
  description              = "otel-xray extension and wrapper (${var.architecture})"
  filename                 = local.layer_zip
  source_code_hash         = filebase64sha256(local.layer_zip)
  compatible_architectures = [var.architecture]
  compatible_runtimes      = ["python3.12", "python3.13", "nodejs20.x", "nodejs22.x", "provided.al2023", "provided.al2"]
  license_info             = "Apache-2.0"
}

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.function_name}-role"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy_attachment" "logs" {
  role       = aws_iam_role.function.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

# xray:PutTraceSegments (api and daemon exporters) and xray:PutTelemetryRecords.
resource "aws_iam_role_policy_attachment" "xray" {
  role       = aws_iam_role.function.name
  policy_arn = "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

data "archive_file" "function" {
  type        = "zip"
  source_dir  = var.function_source_dir
  output_path = "${path.module}/build/python-function.zip"
}

resource "aws_lambda_function" "orders" {
  function_name    = var.function_name
  role             = aws_iam_role.function.arn
  runtime          = "python3.12"
  handler          = "app.handler"
  architectures    = [var.architecture]
  filename         = data.archive_file.function.output_path
  source_code_hash = data.archive_file.function.output_base64sha256
  timeout          = 10
  memory_size      = 256
  layers           = [aws_lambda_layer_version.otel_xray.arn]

  tracing_config {
    mode = "Active"
  }

  environment {
    variables = merge(local.otel_env, local.otlp_env)
  }

  depends_on = [aws_iam_role_policy_attachment.logs, aws_iam_role_policy_attachment.xray]
}
