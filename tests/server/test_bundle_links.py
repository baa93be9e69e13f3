import tracemalloc

import numpy as np
import pytest

from server.models.bundle import BundleInvalid, _check_links


def test_the_link_check_of_wide_links_holds_a_small_share_of_the_array():
    # one long url makes every entry as wide (numpy's fixed-width str): the control-character
    # scan held bool arrays of 65,536 rows x the width at a time, about 0.75x the array on top
    # of it, in every worker at every load (reread5b: +377 MB for a 766 MB array)
    urls = np.array([f"https://shop.example/p/{i}" for i in range(5000)], dtype="<U2000")
    urls[5] = "https://shop.example/p/" + "a" * 1970
    urls[4999] = "https://shop.example/p/\n"
    tracemalloc.start()
    try:
        with pytest.raises(BundleInvalid, match="row 4999"):
            _check_links({"urls": urls})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < urls.nbytes / 8, (peak, urls.nbytes)
