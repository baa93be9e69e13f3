"""`python -m loadtests.bench_impression_flush` on a tiny catalog: it writes real groups with a
thread and with the writer process in turns, and prints each one's CPU and both latenesses,
then the ratios."""
from loadtests import bench_impression_flush


def test_the_flush_bench_prints_its_figures_per_writer(capsys):
    bench_impression_flush.main(["--answers", "20", "--flushes", "3", "--period", "0.02",
                                 "--items", "500"])
    out = capsys.readouterr().out.splitlines()
    for name, first in (("thread", 0), ("process", 3)):
        assert out[first].startswith(f"{name}: 20 answers per write, 3 writes: server process "
                                     "CPU per flush p50 ")
        assert out[first + 1].startswith(f"{name}: event loop (1 ms sleeps): lateness during "
                                         "writes p50/p99/p99.9/max ")
        assert out[first + 2].startswith(f"{name}: batch thread (10 x 0.1 ms GIL releases): ")
    assert "writer process CPU" in out[3] and "writer process CPU" not in out[0]
    assert out[6].startswith("process vs thread: server CPU per flush x")
