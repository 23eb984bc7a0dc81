"""What a load generator sends, built once before any timed section; sending is benchmarks/clients/'s job.

One entry point: `build_requests(RequestSpec(model, kind, target, n_features, options)) -> ModelRequests`
(builder.py; its docstring shows the use). discovery.py lists a models directory's models; signature.py asks a
server what a model expects and whether it is AVAILABLE; protos.py loads TF Serving's protos without TensorFlow.
"""
