"""Progress bars show on a terminal only: pipes and logs stay clean."""
import io

from training.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_and_nothing_in_a_pipe():
    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        with progress(desc="push", total=2048, unit="B", unit_scale=True, stream=stream) as bar:
            bar.update(1024)
            bar.update(1024)
        assert ("push: 100%" in stream.getvalue()) == shown, stream.getvalue()
        assert list(progress(range(3), desc="export", stream=stream)) == [0, 1, 2]


def test_demo_data_shows_its_chunks_on_a_terminal(tmp_path, monkeypatch):
    from training.demo import DemoConfig
    from training.demo_files import write_demo
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    write_demo(tmp_path, DemoConfig(n_users=300, n_items=200, n_days=7, seed=1, chunk_users=100))
    assert "demo-data: 100%" in terminal.getvalue() and "3/3" in terminal.getvalue()
