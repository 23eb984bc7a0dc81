"""Prometheus text from TF Serving's /monitoring/prometheus/metrics, parsed offline, and the per-point delta
between two scrapes. The texts are written in TF Serving's exporter format (metric names with ':' for '/',
latency histograms in µs, a model_name label on every series)."""
from __future__ import annotations

import pytest

from benchmarks.measure.prometheus import delta, parse, scrape


def exposition(ok_m: int, bad_m: int, ok_other: int, lat: tuple[int, int], runtime: tuple[int, int],
               batches: tuple[int, int]) -> str:
    """Counts and (count, sum) pairs as TF Serving exposes them."""
    p = ":tensorflow:serving"
    return f"""\
# TYPE {p}:request_count counter
{p}:request_count{{model_name="m",status="OK"}} {ok_m}
{p}:request_count{{model_name="m",status="INVALID_ARGUMENT"}} {bad_m}
{p}:request_count{{model_name="m",status="FAILED_PRECONDITION"}} 1
{p}:request_count{{model_name="other",status="OK"}} {ok_other}
# TYPE {p}:request_latency histogram
{p}:request_latency_bucket{{API="predict",entrypoint="GRPC",model_name="m",le="1000"}} {lat[0] - 1}
{p}:request_latency_bucket{{API="predict",entrypoint="GRPC",model_name="m",le="+Inf"}} {lat[0]}
{p}:request_latency_sum{{API="predict",entrypoint="GRPC",model_name="m"}} {lat[1]}
{p}:request_latency_count{{API="predict",entrypoint="GRPC",model_name="m"}} {lat[0]}
{p}:request_latency_bucket{{API="predict",entrypoint="GRPC",model_name="other",le="+Inf"}} {ok_other}
{p}:request_latency_sum{{API="predict",entrypoint="GRPC",model_name="other"}} {ok_other * 900}
{p}:request_latency_count{{API="predict",entrypoint="GRPC",model_name="other"}} {ok_other}
# TYPE {p}:runtime_latency histogram
{p}:runtime_latency_bucket{{API="Predict",model_name="m",runtime="TF1",le="+Inf"}} {runtime[0]}
{p}:runtime_latency_sum{{API="Predict",model_name="m",runtime="TF1"}} {runtime[1]}
{p}:runtime_latency_count{{API="Predict",model_name="m",runtime="TF1"}} {runtime[0]}
# TYPE {p}:batching_session:processed_batch_size histogram
{p}:batching_session:processed_batch_size_bucket{{model_name="m",le="+Inf"}} {batches[0]}
{p}:batching_session:processed_batch_size_sum{{model_name="m"}} {batches[1]}
{p}:batching_session:processed_batch_size_count{{model_name="m"}} {batches[0]}
"""


BEFORE = exposition(100, 2, 7, (100, 250_000), (100, 150_000), (40, 160))
AFTER = exposition(160, 5, 50, (163, 400_000), (160, 240_000), (55, 250))


def test_parse_keeps_every_sample_by_name_and_labels():
    snap = parse(BEFORE)
    assert snap.total(":tensorflow:serving:request_count") == 110
    assert snap.total(":tensorflow:serving:request_count", model_name="m") == 103
    assert snap.by_label(":tensorflow:serving:request_count", "status", model_name="m") == {
        "OK": 100.0, "INVALID_ARGUMENT": 2.0, "FAILED_PRECONDITION": 1.0}
    assert snap.total(":tensorflow:serving:request_latency_count", model_name="m") == 100
    assert snap.total(":tensorflow:serving:request_latency_sum") == 250_000 + 7 * 900
    key = (":tensorflow:serving:request_latency_bucket",
           (("API", "predict"), ("entrypoint", "GRPC"), ("le", "1000"), ("model_name", "m")))
    assert snap.samples[key] == 99


def test_delta_of_one_model_between_two_scrapes():
    d = delta(parse(BEFORE), parse(AFTER), "m")
    assert d == {"request_count_by_status": {"OK": 60, "INVALID_ARGUMENT": 3},  # unchanged statuses left out
                 "request_latency_mean_ms": pytest.approx(150_000 / 63 / 1000), "request_latency_count": 63,
                 "runtime_latency_mean_ms": 1.5, "runtime_latency_count": 60,
                 "processed_batch_size_mean": 6.0, "processed_batch_size_batches": 15}


def test_delta_without_a_model_sums_every_model():
    d = delta(parse(BEFORE), parse(AFTER))
    assert d["request_count_by_status"] == {"OK": 103, "INVALID_ARGUMENT": 3}
    assert d["request_latency_count"] == 63 + 43
    assert d["request_latency_mean_ms"] == pytest.approx((150_000 + 43 * 900) / 106 / 1000)


def test_counters_exposed_with_the_total_suffix_count_too():
    text = ('# TYPE :tensorflow:serving:request_count counter\n'
            ':tensorflow:serving:request_count_total{model_name="m",status="OK"} 12\n')
    assert parse(text).by_label(":tensorflow:serving:request_count", "status") == {"OK": 12.0}


def test_no_scrape_means_no_delta():
    assert delta(None, parse(AFTER), "m") == {} and delta(parse(BEFORE), None) == {}
    # nothing happened between the scrapes: no status changed, no latency or batch recorded
    assert delta(parse(BEFORE), parse(BEFORE), "m") == {"request_count_by_status": {}}
    assert scrape("") is None
    assert scrape("http://127.0.0.1:9/monitoring/prometheus/metrics", timeout_s=2) is None  # discard port: refused
