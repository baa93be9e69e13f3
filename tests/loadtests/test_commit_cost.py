"""commit_cost (docs/performance.md, fill2 and rr18f) runs on this tree's Store, prints its
figures in the form the doc quotes, removes its temp store, and bounds its input."""
import re

import pytest

from loadtests import commit_cost


def test_after_a_transaction_it_prints_kib_a_commit_and_leaves_nothing(tmp_path, capsys):
    assert commit_cost.main(["after-txn", "50", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"after a transaction of 50 users: \d+\.\d KiB to storage a commit "
                        r"\(\d+\.\d x written\)\n", out), out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("users", ["0", "20001"])
def test_a_transaction_past_its_bound_is_refused(users, capsys):
    with pytest.raises(SystemExit) as exit_:
        commit_cost.main(["after-txn", users])
    assert exit_.value.code == 2 and "between 1 and 20,000" in capsys.readouterr().err
