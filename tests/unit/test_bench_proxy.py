"""bench proxy's reading of wrk's latency distribution, the figures the 1-client goal is judged by."""
import pytest

from bench.proxy import latency_percentiles

WRK = """Running 1s test @ http://127.0.0.1:19422/v1/chat/completions
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   529.54us  143.29us   3.17ms   94.89%
    Req/Sec     1.90k   203.74     2.17k    63.64%
  Latency Distribution
     50%  {p50}
     75%  587.00us
     90%  643.00us
     99%  {p99}
  2083 requests in 1.10s, 1.21MB read
Requests/sec:   1894.49
Transfer/sec:      1.10MB
"""


@pytest.mark.parametrize(("p50", "p99", "expected"), [
    ("511.00us", "810.00us", (511e-6, 810e-6)),
    ("511.00us", "1.21ms", (511e-6, 1.21e-3)),
    ("2.50ms", "1.02s", (2.5e-3, 1.02)),
])
def test_percentiles_in_seconds_whatever_the_unit(p50, p99, expected):
    assert latency_percentiles(WRK.format(p50=p50, p99=p99)) == pytest.approx(expected)


def test_an_output_without_the_distribution_ends_the_run_naming_it():
    without = WRK.format(p50="511.00us", p99="810.00us").replace("  Latency Distribution", "").replace(
        "     50%  511.00us\n", "")
    with pytest.raises(SystemExit, match="no 50% latency"):
        latency_percentiles(without)
