"""`python -m loadtests.bench_impression_flush` on a tiny catalog: it writes real groups and
prints the flush's CPU and both latenesses."""
from loadtests import bench_impression_flush


def test_the_flush_bench_prints_its_three_figures(capsys):
    bench_impression_flush.main(["--answers", "20", "--flushes", "3", "--period", "0.02",
                                 "--items", "500"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("20 answers per write, 3 writes: flush thread CPU p50 ")
    assert out[1].startswith("event loop (1 ms sleeps): lateness during writes p50/p99/p99.9/max ")
    assert out[2].startswith("batch thread (10 x 0.1 ms GIL releases): lateness during writes")
