"""The demos' progress bars (tqdm): drawn on a terminal, silent elsewhere and when quiet."""
import io

from gpudp.demo._progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream, quiet=False, total=5):
    with Progress(total, "demo", quiet=quiet, stream=stream) as bar:
        for k in range(total):
            bar.update(loss=1.0 / (k + 1), step=k)
    return stream.getvalue()


def test_progress_draws_on_a_terminal_with_label_count_and_fields():
    out = _run(_Terminal())
    assert "demo" in out and "5/5" in out and "100%" in out
    assert "loss=2.000e-01" in out and "step=4" in out


def test_progress_is_silent_when_not_a_terminal_or_quiet():
    assert _run(io.StringIO()) == ""
    assert _run(_Terminal(), quiet=True) == ""

