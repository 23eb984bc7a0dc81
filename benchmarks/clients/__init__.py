"""What a load generator sends and how: request payloads, TF Serving's protos, and the protocol clients
(gRPC on grpc.aio or libcurl, REST on asyncio streams) behind one Transport interface and one registry."""
