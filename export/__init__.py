"""Train the Keras subclassed models and export them as verified, versioned SavedModels for TF Serving."""
