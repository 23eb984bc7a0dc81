"""What the load generators talk to when they start it themselves: the embedded server, the bare gRPC echo
servers and the no-op servers (Python; native nghttpd + nginx), launched by managed.ManagedServer (the
native no-op pair by noop_native); and tfs_models, which writes TF Serving-style SavedModels for the tests
and for benchmarks that need a model of that kind."""
