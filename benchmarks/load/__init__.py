"""Load policies: the closed loop (fixed concurrency), MLPerf LoadGen's open-loop scenarios, and Locust.
Each drives any client from benchmarks.clients and records into benchmarks.measure."""
