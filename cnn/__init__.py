"""Draw-a-digit MNIST CNN: sketch -> preprocess -> CNN -> feature maps -> page."""
