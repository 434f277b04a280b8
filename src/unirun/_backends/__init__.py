"""The built-in backends, one module each; imported lazily through the registry."""
