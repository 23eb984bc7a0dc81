"""What the load generators talk to when they start it themselves: the embedded server as a managed
process, and the no-op servers (Python; native nghttpd + nginx) used to measure the clients."""
