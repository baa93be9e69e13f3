"""The benches' CPU reading covers the server's whole process tree: the process itself, a live
child, and a child it has already reaped (a measurement check, not a speed target)."""
import subprocess
import sys
import textwrap
import time

import pytest

from loadtests.measure import cpu_line_ticks, machine_ticks, tree_cpu_seconds

# Waits for "go", then: a forked child burns 0.3 s of CPU and is reaped, another burns 0.2 s and
# stays alive, the process itself burns 0.1 s; prints "done" and waits for stdin to close.
TREE = textwrap.dedent("""
    import os, sys, time

    def burn(seconds):
        end = time.process_time() + seconds  # CPU time of this process, not wall time
        while time.process_time() < end:
            pass

    sys.stdin.readline()
    reaped = os.fork()
    if reaped == 0:
        burn(0.3)
        os._exit(0)
    os.waitpid(reaped, 0)
    r, w = os.pipe()
    alive = os.fork()
    if alive == 0:
        burn(0.2)
        os.write(w, b"x")
        sys.stdin.read()  # stay alive until stdin closes
        os._exit(0)
    os.read(r, 1)
    burn(0.1)
    print("done", flush=True)
    sys.stdin.read()
    os.waitpid(alive, 0)
""")


def test_tree_cpu_counts_the_process_its_live_and_its_reaped_children():
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        before = tree_cpu_seconds(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
        burnt = tree_cpu_seconds(proc.pid) - before
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    # 0.3 + 0.2 + 0.1 s burnt; each process is read to one clock tick (10 ms), forks cost little
    assert burnt == pytest.approx(0.6, abs=0.06)


def test_a_process_that_is_gone_is_an_error():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        tree_cpu_seconds(proc.pid)


def test_latency_plot_of_real_runs_against_a_server(server_process, tmp_path):
    """Ping measured at two loads against a real server: the plot has one line pair for Ping."""
    from loadtests.loadgen import PING, ping_payloads
    from loadtests.measure import by_rpc, measure, write_latency_plot
    from loadtests.plot import points
    from tests.pictures import check_png

    server = server_process()
    runs = [measure("Ping closed", server.proc.pid, server.target, PING, ping_payloads(),
                    concurrency=2, duration=0.5),
            measure("Ping @ 40/s", server.proc.pid, server.target, PING, ping_payloads(),
                    rate=40.0, duration=0.5)]
    series = by_rpc(runs)
    assert list(series) == ["Ping"] and len(series["Ping"]) == 2
    qps, p50, p99 = points(series["Ping"])
    assert qps == sorted(m.load.qps for m in runs) and all(a <= b for a, b in zip(p50, p99))
    out = write_latency_plot(series, tmp_path / "latency.png", "test")
    check_png(out.read_bytes(), (800, 450))


def test_the_steal_field_and_the_total_of_a_cpu_line():
    """user nice system idle iowait irq softirq steal guest guest_nice: steal is the 8th, the
    guest fields are in user already."""
    assert cpu_line_ticks(b"cpu  1 2 3 4 5 6 7 8 9 10\n") == (8, 36)
    assert cpu_line_ticks(b"cpu 10 0 5 100 0 0 0 0") == (0, 115)


def test_machine_ticks_count_up():
    steal, total = machine_ticks()
    time.sleep(0.05)  # the idle ticks go on
    steal2, total2 = machine_ticks()
    assert 0 <= steal <= total and 0 <= steal2 - steal <= total2 - total and total2 > total


def test_a_p99_from_few_calls_is_marked(server_process, capsys):
    """A p99 over a few dozen calls is the slowest of them or near it: the table says so."""
    from loadtests.loadgen import PING, ping_payloads
    from loadtests.measure import measure, print_table

    server = server_process()
    few = measure("Ping @ 40/s", server.proc.pid, server.target, PING, ping_payloads(),
                  rate=40.0, duration=0.5)
    assert 0 < few.load.calls < 100
    print_table([few])
    row, note = capsys.readouterr().out.splitlines()[1:3]
    assert f"{few.load.p99_ms:6.2f}*" in row
    assert note.startswith("* p99 over fewer than 1,000 calls")
