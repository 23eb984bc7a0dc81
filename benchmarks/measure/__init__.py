"""Measurement: latency histograms (HdrHistogram), the recorder and CPU meter, Prometheus scrapes."""
