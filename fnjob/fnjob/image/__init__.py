"""Making the image: package the code, find the base's Python, build the layer, push it."""
