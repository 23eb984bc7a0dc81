"""How a load generator sends: the protocol clients (gRPC on grpc.aio or libcurl, REST on asyncio streams)
behind one Transport interface and one registry (transports.py), and the one untimed probe request. What
they send is built in benchmarks/requests/."""
