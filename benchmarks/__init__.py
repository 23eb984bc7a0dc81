"""tfserve-bench's benchmarks: in-process, served (gRPC, REST, LoadGen), Locust, capacity, compare, reliability."""

# pycurl (the libcurl gRPC client, clients/grpc_curl.py) must load before TensorFlow in a
# process that uses both: TensorFlow brings its own, older libcurl and exports its symbols globally, so
# a pycurl imported after it binds to that copy and refuses to load ("libcurl link-time version is
# older than compile-time version"). Loaded first, each keeps its own libcurl.
try:
    import pycurl  # noqa: F401
except ImportError:  # a missing or broken pycurl only matters to --grpc-client curl, which says so
    pass
