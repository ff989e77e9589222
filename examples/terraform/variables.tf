variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "us-east-1"
}

variable "architecture" {
  description = "Instruction set of the function and of the layer zip: x86_64 or arm64."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "The architecture must be x86_64 or arm64."
  }
}

variable "exporter" {
  description = "OTEL_XRAY_EXPORTER: auto (X-Ray daemon when active tracing is on, else PutTraceSegments), daemon, api or otlp."
  type        = string
  default     = "auto"
  validation {
    condition     = contains(["auto", "daemon", "api", "otlp"], var.exporter)
    error_message = "The exporter must be auto, daemon, api or otlp."
  }
}

variable "otlp_endpoint" {
  description = "OTEL_XRAY_OTLP_ENDPOINT, required when exporter is otlp (e.g. https://xray.us-east-1.amazonaws.com/v1/traces)."
  type        = string
  default     = ""
}

variable "indexed_attributes" {
  description = "OTEL_XRAY_INDEXED_ATTRIBUTES: span attributes that become X-Ray annotations."
  type        = string
  default     = "order.id"
}

variable "layer_zip_dir" {
  description = "Where `make layer` wrote otel-xray-<architecture>.zip."
  type        = string
  default     = "../../target/layer-zips"
}

variable "function_source_dir" {
  description = "The Python function with its dependencies installed beside it (see README.md here)."
  type        = string
  default     = "build/python-function"
}

variable "function_name" {
  description = "Name of the sample function."
  type        = string
  default     = "otel-xray-orders"
}
