"""Train compact image models, evaluate them and package Custom Vision style ONNX exports."""
