"""`training.report`: the pictures of a trained bundle's manifest and the numbers beside them."""
import base64
import json
import re

import pytest

from tests.pictures import check_png
from training import report
from training.bundle import write_bundle
from training.evaluate import CURVE_KS

SIZE = (700, 360)   # report.SIZE inches at report.DPI


@pytest.fixture(scope="module")
def manifest(trained, tmp_path_factory):
    path = write_bundle(trained, tmp_path_factory.mktemp("bundles"))
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="module")
def page(manifest, tmp_path_factory):
    path = report.write_report(manifest, tmp_path_factory.mktemp("report") / "report.html")
    return path.read_text()


def test_report_embeds_four_pictures_that_decode(page):
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4    # metrics vs baselines, recall/NDCG curves, coverage, timings
    for data in images:
        check_png(base64.b64decode(data), SIZE)


def test_report_is_self_contained(page):
    assert "http" not in page and "<script" not in page


def _table_cell(page, row, column):
    """The text of ``column`` in the metrics-table row whose first cell is ``row``."""
    table = re.search(r"<h2>Metrics</h2><table>(.*?)</table>", page).group(1)
    header = re.findall(r"<th>(.*?)</th>", table)
    for tr in re.findall(r"<tr>(<td>.*?)</tr>", table):
        cells = re.findall(r"<td>(.*?)</td>", tr)
        if cells[0] == row:
            return cells[header.index(column)]
    raise AssertionError(f"no row {row!r}")


@pytest.mark.parametrize("method", ["model", "retrieval", "popularity"])
@pytest.mark.parametrize("column", ["ndcg@10", "recall@10", "coverage", "recall@1"])
def test_report_holds_the_manifest_numbers_as_text(page, manifest, method, column):
    assert float(_table_cell(page, method, column)) == pytest.approx(
        manifest["metrics"][method][column], abs=5e-5)


def test_report_holds_the_timings_as_text(page, manifest):
    for stage, seconds in manifest["params"]["timings"].items():
        assert f"<tr><td>{stage}</td><td>{float(seconds):.4f}</td></tr>" in page


def test_curves_are_read_from_the_manifest_in_k_order(manifest):
    ks, values = report.curve_points(manifest["metrics"]["model"], "recall")
    assert ks == [*CURVE_KS, 10]
    assert values == [manifest["metrics"]["model"][f"recall@{k}"] for k in ks]


def test_each_chart_on_its_own_decodes(manifest):
    check_png(report.metrics_chart(manifest["metrics"]), SIZE)
    check_png(report.timings_chart({"a_s": 1.0, "b_s": 3.5, "total_s": 4.5}), SIZE)
