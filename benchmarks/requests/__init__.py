"""What a load generator sends: request bytes for any served model, built once before any timed section.

One entry point, `build_requests(RequestSpec(model, kind, target, n_features, options)) -> ModelRequests`
(builder.py): the manifest fast path for the project's own models, or requests derived from the served
signature (tensors.py), from --input-data files (input_data.py) or as tf.Examples for classify/regress
(examples.py). `ModelRequests.payload(batch)` gives the gRPC bytes and REST body for one batch size,
`ModelRequests.check(kind, body, batch)` judges an answer. discovery.py lists the models of a models
directory; signature.py asks a server what a model expects and whether it is AVAILABLE; protos.py loads TF
Serving's protos without TensorFlow. Sending is benchmarks/clients/'s job.
"""
